"""Test-only plain-Python twins of the kernels in loghub_kernels.py (tests compare each kernel with its twin).

Nothing in production imports this module.
"""
import numpy as np


# ---------------------------------------------------------------- plain-Python twins (test references)
def _cell_py(data):
    if any(c in data for c in (b",", b'"', b"\r", b"\n")):
        return b'"' + data.replace(b'"', b'""') + b'"'
    return data


def params_need_repr_py(buf, pptr, pstart, pend):
    """Plain-Python twin of params_need_repr."""
    data = bytes(buf)
    return np.array([not all(data[pstart[j]:pend[j]].isascii() for j in range(pptr[i], pptr[i + 1]))
                     for i in range(len(pptr) - 1)], dtype=np.bool_)


def render_rows_py(buf, fstart, fend, fcols, cstart, cend, tpl_row, tpl_pool, tpl_ptr, pptr, pstart, pend, py_row,
                   py_pool, py_ptr, first_id):
    """Plain-Python twin of row_lengths + render_rows: the same bytes (ParameterList by repr() itself)."""
    data, pool, pyp = bytes(buf), bytes(tpl_pool), bytes(py_pool)
    rows = []
    for i in range(len(cstart)):
        r = py_row[i]
        if r >= 0:
            rows.append(pyp[py_ptr[r]:py_ptr[r + 1]])
            continue
        cells = [str(first_id + i).encode()]
        cells += [_cell_py(data[fstart[i, c]:fend[i, c]]) for c in fcols]
        cells.append(_cell_py(data[cstart[i]:cend[i]]))
        values = [data[pstart[j]:pend[j]].decode("ascii") for j in range(pptr[i], pptr[i + 1])]
        t = tpl_row[i]
        rows.append(b",".join(cells) + b"," + pool[tpl_ptr[t]:tpl_ptr[t + 1]] + _cell_py(repr(values).encode())
                    + b"\r\n")
    return np.frombuffer(b"".join(rows), dtype=np.uint8)
