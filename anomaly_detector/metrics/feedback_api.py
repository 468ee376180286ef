"""POST /admin/feedback (and GET to list): the operator's verdicts on incidents and templates, kept as rules.

metrics/admin.py runs the admin checks (rate limit, route, method, token, body size) and hands the
parsed body here. FeedbackDesk checks it (400 with the reason), resolves an incident id or a template
id through the workers' published views (metrics/incidents_api.WorkerViews), and rewrites the rules
file that every worker reads at its batch boundaries (detection/feedback.py: what a rule does).

Bodies:
  {"incident": "<id>", "verdict": "normal"|"problem"}       its templates (and kind, when it is about a
                                                             whole source) for its source
  {"template": <id>|"<text>", "source": "<name>", "verdict": "normal"|"problem"}
  {"rule": "<rule id>", "verdict": "clear"}                 also {"incident": ...} or {"template", "source"}
"""
import json
import logging
import os
import time

from anomaly_detector.detection.feedback import (
    MAX_SOURCE_CHARS,
    MAX_TEMPLATE_CHARS,
    load_rules,
    make_rule,
    rules_path,
    save_rules,
)

log = logging.getLogger(__name__)
FEEDBACK_VERDICTS = ("normal", "problem", "clear")    # the verdict label of feedback_total
_FIELDS = ("verdict", "incident", "template", "source", "rule")
# The reason label of feedback_refused_total (every 400 of a JSON body this module refuses)
REFUSAL_REASONS = ("invalid", "unknown_incident", "unknown_source", "unknown_template", "ambiguous_template",
                   "max_rules", "nothing_to_clear")


class FeedbackError(ValueError):
    """A feedback body that cannot be taken; the message is the 400's reason, `reason` its metric label."""

    def __init__(self, message, reason="invalid"):
        super().__init__(message)
        self.reason = reason


class FeedbackDesk:
    """The rules (loaded from the file at start) and the request logic. Callers serialise calls (admin lock)."""

    def __init__(self, state_dir, views, max_rules):
        self.path, self.views, self.max_rules = rules_path(state_dir), views, int(max_rules)
        self.counts = {verdict: 0 for verdict in FEEDBACK_VERDICTS}     # feedback_total, since the sidecar started
        self.refused = {reason: 0 for reason in REFUSAL_REASONS}         # feedback_refused_total
        self.rules = self._load()

    def _load(self):
        try:
            return load_rules(self.path)
        except (OSError, ValueError) as exc:
            aside = "%s.corrupt-%d" % (self.path, int(time.time()))
            try:
                os.replace(self.path, aside)
            except OSError:
                aside = "(could not be moved: %s)" % self.path
            log.error("feedback rules file unusable (%s), set aside as %s; no feedback rule applies", exc, aside)
            return []

    # -- requests ---------------------------------------------------------------------------------

    def listing(self):
        return {"rules": list(self.rules), "max_rules": self.max_rules, **self.rule_counts()}

    def apply(self, body, client):
        """One POST body -> (result sentence, reply fields). FeedbackError when it cannot be taken (counted)."""
        try:
            return self._apply(body, client)
        except FeedbackError as exc:
            self.refused[exc.reason] += 1
            raise

    def _apply(self, body, client):
        unknown = sorted(str(k) for k in body if k not in _FIELDS)
        if unknown:
            raise FeedbackError("unknown field(s) %s: expected verdict with incident, template and source, or rule"
                                % ", ".join(unknown))
        verdict = body.get("verdict")
        if verdict not in FEEDBACK_VERDICTS:
            raise FeedbackError("verdict must be one of %s, got %s" % (", ".join(FEEDBACK_VERDICTS), _show(verdict)))
        if verdict == "clear":
            result, fields = self._clear(body)
        else:
            result, fields = self._add(verdict, body, client)
        self.counts[verdict] += 1
        return result, fields

    def _add(self, verdict, body, client):
        if "rule" in body:
            raise FeedbackError("rule names a rule to clear: it goes with verdict clear")
        source, templates, kinds, incident = self._target(body)
        rule = make_rule(verdict, source, templates, kinds, incident, client)
        others = [r for r in self.rules if r["id"] != rule["id"]]
        if len(others) >= self.max_rules:
            log.warning("feedback: %d rules kept, the most [detection] feedback_max_rules allows; refused", len(others))
            raise FeedbackError("%d feedback rules kept, the most [detection] feedback_max_rules allows: clear one "
                                "first" % len(others), "max_rules")
        self._save(others + [rule])     # the newest rule last: where two rules name one template, it wins
        what = "incident %s (%s)" % (incident, ", ".join(templates + kinds) or "no template") if incident else \
            "template %r" % templates[0]
        effect = "scores 0 (never flagged)" if verdict == "normal" else "is flagged at the anomaly threshold"
        return ("source %s: %s %s in every worker from its next batch (rule %s)" % (source, what, effect, rule["id"]),
                {"rule": rule})

    def _target(self, body):
        """(source, template texts, kinds, incident id) a normal or problem verdict covers."""
        if "incident" in body:
            if "template" in body or "source" in body:
                raise FeedbackError("give either incident, or template and source, not both")
            incident = _text(body, "incident", 64)
            record = self.views.find(incident)
            if record is None:
                raise FeedbackError("unknown incident %r: not among the open incidents and the recently closed ones "
                                    "GET /api/incidents lists" % incident, "unknown_incident")
            templates = [text for _tid, text in record.get("template_texts", [])]
            kinds = [record["kind"]] if record.get("template_id", -1) < 0 and record.get("kind") else []
            if not templates and not kinds:
                raise FeedbackError("incident %s names no template feedback can hold (its templates are over %d "
                                    "characters)" % (incident, MAX_TEMPLATE_CHARS), "unknown_template")
            return str(record["source"]), templates, kinds, incident
        source, template = self._template_fields(body)
        return source, [self._known_template(source, template)], [], ""

    def _template_fields(self, body):
        if "template" not in body or "source" not in body:
            raise FeedbackError("missing field(s): give incident, or template and source")
        source = _text(body, "source", MAX_SOURCE_CHARS)
        template = body["template"]
        if isinstance(template, bool) or not isinstance(template, (int, str)):
            raise FeedbackError("template must be a template id (a whole number) or its text, got %s" % _show(template))
        if isinstance(template, str):
            template = _text(body, "template", MAX_TEMPLATE_CHARS)
        return source, template

    def _known_template(self, source, template):
        texts = self.views.template_texts(source, template)
        if len(texts) == 1:
            return texts.pop()
        if texts:
            raise FeedbackError("template id %d names %d different templates of source %s (its workers widened it differently): give "
                                "its text" % (template, len(texts), source), "ambiguous_template")
        if not self.views.source_known(source):
            raise FeedbackError("unknown source %r: no worker has seen it lately" % source, "unknown_source")
        raise FeedbackError("unknown template %s for source %s: not among the templates its workers saw last "
                            "([detection] feedback_templates_known) or its incidents show" % (_show(template), source),
                            "unknown_template")

    def _clear(self, body):
        if "rule" in body:
            if len(body) != 2:
                raise FeedbackError("clear takes rule alone, or incident, or template and source")
            rule = _text(body, "rule", 64)
            gone = [r for r in self.rules if r["id"] == rule]
            what = "rule %s" % rule
        elif "incident" in body:
            incident = _text(body, "incident", 64)
            gone = [r for r in self.rules if r["incident"] == incident]
            what = "the rule of incident %s" % incident
        else:
            source, template = self._template_fields(body)
            texts = self.views.template_texts(source, template) if isinstance(template, int) else {template}
            gone = [r for r in self.rules if r["source"] == source and texts & set(r["templates"])]
            what = "the rules of template %s of source %s" % (_show(template), source)
        if not gone:
            raise FeedbackError("no feedback rule to clear: %s is not kept (GET /admin/feedback lists them)" % what,
                                "nothing_to_clear")
        ids = {r["id"] for r in gone}
        self._save([r for r in self.rules if r["id"] not in ids])
        return ("%s cleared (%s) in every worker from its next batch" % (what, ", ".join(sorted(ids))),
                {"cleared": sorted(ids)})

    def _save(self, rules):
        try:
            save_rules(self.path, rules)
        except OSError as exc:
            raise OSError("cannot write the feedback rules file %s: %s" % (self.path, exc.strerror or exc)) from None
        self.rules = rules

    def rule_counts(self):
        return {"normal": sum(r["verdict"] == "normal" for r in self.rules),
                "problem": sum(r["verdict"] == "problem" for r in self.rules)}


def _text(body, field, limit):
    value = body.get(field)
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise FeedbackError("%s must be a non-empty string of at most %d characters, got %s" % (field, limit,
                                                                                             _show(value)))
    return value


def _show(value):
    return json.dumps(value, ensure_ascii=False)[:60]
