"""The glue from bytes to verdicts: frame and parse lines, mine templates, score with the detection
engine, write one JSON record per line and collect incidents.

Used by `replay` (commands/replay.py) and by the daemon's detector workers; parsing/ and
detection/ do the work, this class only keeps them in step, one batch at a time.
"""
import json
import os

import numpy as np

from .detection.engine import TIER_NAMES, DetectionEngine
from .detection.output_kernels import KEY_ARRAYS, escaped, record_prefix, write_records
from .parsing.batch import ParsedBatch
from .parsing.columns import parse_columns
from .parsing.masking import MaskingConfig
from .parsing.miner import MinedBatch, TemplateMiner, render_tokens
from .parsing.records import RecordParser
from .parsing.unclustered import UNCLUSTERED_TEXT
from .parsing.vocabulary import RedisVocabulary, Vocabulary
from .storage.atomic import generation_paths, sweep_orphan_temps
from .storage.layout import as_paths, vocabulary_path

# Bytes of input parsed at once: large enough that per-chunk Python is noise. The lines of a chunk are
# scored in batches of at most [processing] batch_size lines, as the daemon's workers take them: a
# batch is scored against the models as they were before it, so a chunk holding hours of a quiet
# file would be judged against hours-old levels (a replay must not see what the daemon does not).
CHUNK_BYTES = 8 << 20


def source_of_file(path):
    """Default source name of a file's lines: its base name without .log/.jsonl/.txt."""
    base = os.path.basename(path)
    for ext in (".log", ".jsonl", ".txt"):
        if base.endswith(ext):
            return base[: -len(ext)]
    return base


def open_vocabulary(config):
    """The deployment's template vocabulary: in Redis with [parsing] vocabulary_url (every daemon of the
    deployment), else under [paths] state_dir (this daemon's workers); the reserved <unclustered> is its
    first entry, id 0."""
    parsing = config["parsing"]
    first = [UNCLUSTERED_TEXT.encode()]
    if parsing["vocabulary_url"]:
        return RedisVocabulary(parsing["vocabulary_url"], parsing["vocabulary_key"], parsing["vocabulary_max_entries"],
                               render=render_tokens, first=first)
    return Vocabulary(vocabulary_path(config["paths"]["state_dir"]), parsing["vocabulary_max_entries"],
                      render=render_tokens, first=first)


def masking_from_config(parsing):
    return MaskingConfig(numbers=parsing["mask_numbers"], hex=parsing["mask_hex"], ip=parsing["mask_ips"],
                         uuid=parsing["mask_uuids"], path=parsing["mask_paths"],
                         duration=parsing["mask_durations"], size=parsing["mask_sizes"],
                         extra=tuple(parsing["extra_masks"]))


class Pipeline:
    """One parser per file, one template miner and one detection engine for everything."""

    def __init__(self, config, fmt="auto", log_format="", chunk_bytes=CHUNK_BYTES, source_fields=(),
                 source_prefix="auto", vocabulary=None):
        self.config = config
        self.fmt = fmt
        self.log_format = log_format
        self.source_fields = tuple(source_fields)
        self.source_prefix = source_prefix
        self.chunk_bytes = int(chunk_bytes)
        self.batch_lines = int(config["processing"]["batch_size"])
        # parsing/vocabulary.py: the daemon's workers share one; replay numbers its own templates
        self.vocabulary = vocabulary
        self.miner = TemplateMiner(**self._miner_settings())
        self.engine = DetectionEngine(config)
        if vocabulary is not None:
            self.engine.template_ids = "deployment"
        self.n_templates = 0
        self.lines = 0
        self.anomalies = 0
        # Anomalous lines by the tier that scored them highest (TIER_NAMES order), for the metrics.
        self.anomalies_by_tier = np.zeros(len(TIER_NAMES), np.int64)
        self.incidents = []     # closed incident records not yet taken
        self._escaped = {}      # tid -> (template text, its JSON literal): see _template_table

    def parser_for(self, file_name, reference_time=None):
        """reference_time: when the file was last written (year-less stamps take their year from it)."""
        return RecordParser(format=self.fmt, log_format=self.log_format, source=source_of_file(file_name),
                            max_line_bytes=self.config["processing"]["max_line_bytes"],
                            source_fields=self.source_fields, source_prefix=self.source_prefix,
                            max_sources=self.config["processing"]["max_sources"], reference_time=reference_time,
                            detect_log_format=True, inline_levels=self.config["parsing"]["inline_levels"])

    def process_file(self, path, progress=None, buffers=False):
        """Yield output chunks (bytes of JSON lines) for every line of the file at `path`.

        The file is read a chunk at a time (cut at the last newline), so memory does not grow
        with the file. buffers=True yields the same bytes as uint8 arrays, for a caller that only
        writes them (replay: the copy into a bytes object was 200 MB for a 600k-line file)."""
        with open(path, "rb") as f:
            written = os.fstat(f.fileno()).st_mtime
            yield from self._process_pieces(_file_chunks(f, self.chunk_bytes), path, 1, progress, written, buffers)

    def process_buffer(self, buf, file_name, first_line=1, progress=None):
        """Yield output chunks for the lines of `buf` (bytes), numbered from first_line."""
        yield from self._process_pieces(_chunks(buf, self.chunk_bytes), file_name, first_line, progress)

    def _process_pieces(self, pieces, file_name, first_line, progress, reference_time=None, buffers=False):
        parser = self.parser_for(file_name, reference_time)
        prefix = record_prefix(file_name)
        line_no = first_line
        for chunk in pieces:
            columns = parse_columns(parser, chunk)
            for first in range(0, max(columns.n, 1), self.batch_lines):
                part = columns.lines(first, first + self.batch_lines) if columns.n > self.batch_lines else columns
                out = self.render_columns(part, prefix, line_no + first)
                yield out if buffers else out.tobytes()
            line_no += columns.n
            if progress is not None:
                progress(len(chunk))

    def score_columns(self, columns, prefix, first_line):
        """Mine, score and render one parsed chunk -> bytes of JSON lines."""
        return self.render_columns(columns, prefix, first_line).tobytes()

    def render_columns(self, columns, prefix, first_line):
        """score_columns, the JSON lines as a uint8 array."""
        batch = self._batch(columns)
        result = self.engine.process(batch, self.n_templates, self.template_text)
        self.lines += batch.n
        self.anomalies += int(result.anomaly.sum())
        if result.anomaly.any():
            self.anomalies_by_tier += np.bincount(result.tiers[:, result.anomaly].argmax(axis=0),
                                                  minlength=len(TIER_NAMES))
        self.incidents += result.incidents
        pool, starts, ends = self._template_table(batch.template_id)
        r_pool, r_start, r_end = _reason_table(batch.n, result.reasons)
        out = write_records(prefix, first_line, batch.ts, batch.template_id, pool, starts, ends,
                            result.score.astype(np.float64), result.anomaly, result.tiers.astype(np.float64),
                            r_pool, r_start, r_end, KEY_ARRAYS)
        return out

    def _batch(self, columns):
        used = np.zeros(len(columns.sources), np.bool_)
        used[columns.source_id] = True    # a name no line has (the input's own, say) gets no model
        stable = np.array([self.engine.source_id(name) if used[k] else 0 for k, name in enumerate(columns.sources)]
                          or [0], np.int32)
        source_id = stable[columns.source_id]
        if self.vocabulary is not None:     # templates other workers mined since the last batch
            self.miner.adopt(self.vocabulary.take_new())
        mined = self.miner.add_batch(columns.content_buf, columns.content_start, columns.content_end, source_id)
        widened = self.miner.take_widened()
        if widened:
            self.engine.templates_widened(widened)
            mined = without_params_of(mined, widened)
        if columns.n:
            self.n_templates = max(self.n_templates, int(mined.template_id.max()) + 1)
        return ParsedBatch(ts=columns.ts, source_id=source_id, level=columns.level,
                           template_id=mined.template_id, buf=columns.content_buf,
                           content_start=columns.content_start, content_end=columns.content_end,
                           param_ptr=mined.param_ptr, param_pos=mined.param_pos, param_hash=mined.param_hash,
                           param_num=mined.param_num, sources=self.engine.sources,
                           param_start=mined.param_start, param_end=mined.param_end,
                           host_id=columns.host_id if columns.hosts else None, hosts=columns.hosts)

    def _miner_settings(self):
        return dict(miner_settings(self.config["parsing"]), vocabulary=self.vocabulary)

    def template_text(self, tid):
        try:
            return self.miner.template(int(tid))
        except KeyError:
            return "<evicted template %d>" % tid

    def _template_table(self, template_id):
        """Escaped template texts of this batch's ids as one pool plus start/end per id."""
        starts = np.zeros(self.n_templates, np.int64)
        ends = np.zeros(self.n_templates, np.int64)
        parts, size = [], 0
        if len(self._escaped) > 2 * self.miner.max_templates:    # ids of evicted templates pile up
            self._escaped.clear()
        for tid in np.unique(template_id).tolist():
            text = self._escaped_text(tid)
            starts[tid], ends[tid] = size, size + len(text)
            parts.append(text)
            size += len(text)
        return np.frombuffer(b"".join(parts) or b" ", np.uint8), starts, ends

    def _escaped_text(self, tid):
        # The same templates come back batch after batch: json.dumps only a text not seen for this id.
        text = self.template_text(tid)
        kept = self._escaped.get(tid)
        if kept is None or kept[0] != text:
            kept = (text, escaped(text))
            self._escaped[tid] = kept
        return kept[1]

    def take_incidents(self):
        """Incident records closed since the last call."""
        taken, self.incidents = self.incidents, []
        return taken

    def finish(self):
        """End of input: close the open incidents; return every record not yet taken."""
        self.incidents += self.engine.finish()
        return self.take_incidents()

    def save(self, where):
        """Save miner and engine to `where`: a storage.layout.StatePaths, or a directory (flat layout)."""
        paths = as_paths(where)
        self.engine.save(paths)
        self.miner.save(paths.templates)

    def load(self, where):
        """Restore engine and miner from `where` (as save); returns False when there was nothing to restore."""
        paths = as_paths(where)
        path = paths.templates
        sweep_orphan_temps(path)    # also when a first write was killed before any snapshot existed
        if any(os.path.exists(g) for g in generation_paths(path)):
            self.miner = TemplateMiner.load(path, **self._miner_settings())
            self.n_templates = max([self.n_templates] + [tid + 1 for tid, _, _ in self.miner.templates()])
        return self.engine.load(paths)


def without_params_of(mined, template_ids):
    """The batch with no parameters on the lines of these templates.

    A template widened (or merged into a sibling) during a batch: its lines before that moment were
    cut by its old text, so their parameter positions mean other fields now (a request id where the
    provider is); learned into the statistics the tiers just reset, they would spoil them (a provider
    that seems to take a new value on every line). One batch of such lines is left unjudged instead."""
    tids = np.asarray(mined.template_id)
    counts = np.diff(mined.param_ptr)
    keep_line = ~np.isin(tids, np.asarray(template_ids, dtype=tids.dtype))
    if keep_line.all():
        return mined
    keep = np.repeat(keep_line, counts)
    ptr = np.zeros(len(tids) + 1, dtype=mined.param_ptr.dtype)
    np.cumsum(counts * keep_line, out=ptr[1:])
    return MinedBatch(tids, ptr, mined.param_pos[keep], mined.param_hash[keep], mined.param_num[keep],
                      mined.param_start[keep], mined.param_end[keep])


def miner_settings(parsing):
    """TemplateMiner keyword arguments from the [parsing] section."""
    return dict(max_templates=parsing["max_templates"], masking=masking_from_config(parsing),
                free_text_window=parsing["free_text_window"], free_text_share=parsing["free_text_share"])


def _reason_table(n, reasons):
    starts = np.zeros(n, np.int64)
    ends = np.zeros(n, np.int64)
    parts, size = [], 0
    for i in sorted(reasons):
        text = json.dumps([r[1] for r in reasons[i]], ensure_ascii=False).encode("utf-8")
        starts[i], ends[i] = size, size + len(text)
        parts.append(text)
        size += len(text)
    return np.frombuffer(b"".join(parts) or b" ", np.uint8), starts, ends


def _chunks(buf, size):
    """Pieces of buf of about `size` bytes, each ending at a newline (the last one may not)."""
    view = memoryview(buf)
    start, total = 0, len(buf)
    while start < total:
        end = min(start + size, total)
        if end < total:
            nl = bytes(view[end:min(end + (1 << 20), total)]).find(b"\n")
            end = end + nl + 1 if nl >= 0 else _next_newline(buf, end)
        yield bytes(view[start:end])
        start = end


def _file_chunks(f, size):
    """Pieces of an open binary file of about `size` bytes, each ending at a newline (the last may not)."""
    if not f.seekable():   # a pipe or a terminal: the partial last line is carried in memory
        yield from _stream_chunks(f, size)
        return
    # A file: the partial last line is read again with the next piece instead of being carried and
    # joined to it, which copied every piece once more (12 MB at a time). The pieces are the same.
    back = 0
    while True:
        data = f.read(back + size)
        if len(data) <= back:
            if data:
                yield data
            return
        cut = data.rfind(b"\n") + 1
        back = len(data) - cut
        if back:
            f.seek(-back, os.SEEK_CUR)
        if cut:
            yield data if not back else data[:cut]


def _stream_chunks(f, size):
    """_file_chunks of a stream that cannot seek."""
    carry = b""
    while True:
        block = f.read(size)
        if not block:
            if carry:
                yield carry
            return
        data = carry + block
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            carry = data
            continue
        carry = data[cut:]
        yield data[:cut]


def _next_newline(buf, pos):
    nl = buf.find(b"\n", pos)
    return len(buf) if nl < 0 else nl + 1
