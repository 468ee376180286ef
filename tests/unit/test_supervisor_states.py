"""Process states: values fixed (they are stored in shared memory) and names for reporting.
"""
from anomaly_detector.supervisor.states import ALIVE_STATES, DOWN_STATES, ProcessState, state_name


def test_values_are_supervisords_and_a_zeroed_row_reads_stopped():
    assert [int(s) for s in ProcessState] == [0, 10, 20, 30, 40, 100, 200, 1000]
    assert state_name(0) == "STOPPED" and state_name(20.0) == "RUNNING" and state_name(7) == "UNKNOWN"


def test_every_state_but_unknown_is_either_alive_or_down():
    assert set(ALIVE_STATES) | set(DOWN_STATES) == set(ProcessState) - {ProcessState.UNKNOWN}
    assert not set(ALIVE_STATES) & set(DOWN_STATES)
