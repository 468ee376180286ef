"""Synthetic services for the workload generator: web, app, db, batch and health log lines.

Each service turns expected per-minute rates and the incidents active in one chunk of event time
into timestamped events; generator.py merges and writes them, incidents.py decides what breaks.
"""
import zlib

import numpy as np

LEVELS = ("DEBUG", "INFO", "WARN", "ERROR", "FATAL")
DEBUG, INFO, WARN, ERROR, FATAL = range(5)
NO_TAG = -1

# Values the generator never uses in normal traffic, so an incident that uses one is truly new.
NEW_HTTP_STATUSES = (507, 451, 418, 508, 511)
NEW_DB_HOSTS = ("db-replica-7", "db-standby-2", "db-primary-9")
NEW_PAYMENT_PROVIDERS = ("klarna", "applepay-direct", "wirecard")
NEW_AUTH_METHODS = ("legacy_token", "magic_link")

# Sessions per minute that a broken workflow or an odd value keeps coming at, whatever the traffic.
SESSION_FLOOR_PER_MIN = 0.3

DB_HOSTS_READ = ("db-replica-1", "db-replica-2", "db-replica-3")
DB_HOST_WRITE = "db-primary-1"
PAYMENT_PROVIDERS = ("stripe", "adyen", "paypal")
AUTH_METHODS = ("password", "token", "sso")


class Events:
    """Events of one service for one chunk: parallel lists of timestamps, levels, texts, incident tags."""

    def __init__(self):
        self.ts, self.level, self.tag, self.msg = [], [], [], []

    def add(self, ts, msgs, level, tag=NO_TAG):
        n = len(msgs)
        if n == 0:
            return
        self.ts.append(np.asarray(ts, dtype=np.float64))
        self.msg.extend(msgs)
        self.level.append(np.full(n, level, np.int8) if np.isscalar(level) else np.asarray(level, np.int8))
        self.tag.append(np.full(n, tag, np.int32) if np.isscalar(tag) else np.asarray(tag, np.int32))

    def arrays(self):
        if not self.ts:
            return np.empty(0), np.empty(0, np.int8), np.empty(0, np.int32), []
        return np.concatenate(self.ts), np.concatenate(self.level), np.concatenate(self.tag), self.msg


def arrivals(rng, t0, per_minute):
    """Poisson arrival times for a non-homogeneous rate given per minute from t0 (unsorted)."""
    counts = rng.poisson(np.maximum(per_minute, 0.0))
    minute = np.repeat(np.arange(len(per_minute)), counts)
    return t0 + 60.0 * (minute + rng.random(minute.size))


def in_window(ts, inc):
    return (ts >= inc.start) & (ts < inc.end)


def incident_arrivals(rng, t0, n_minutes, inc, per_minute):
    """This chunk's share of an incident's extra lines; the first one is pinned near the start so
    that even a slow trickle leaves evidence."""
    ts = arrivals(rng, t0, np.full(n_minutes, per_minute))
    ts = ts[in_window(ts, inc)]
    first = inc.start + 1.0 + 0.1 * (inc.id % 300)
    if t0 <= first < t0 + 60.0 * n_minutes:
        ts = np.append(ts, first)
    return ts


def lognormal(rng, median, sigma, n):
    return median * np.exp(sigma * rng.standard_normal(n))


def cdf(weights):
    """Cumulative distribution of weights, for draw(): rng.choice(p=...) rebuilds it on every call."""
    c = np.cumsum(np.asarray(weights, dtype=np.float64))
    return c / c[-1]


def draw(rng, weights_cdf, n):
    return np.minimum(np.searchsorted(weights_cdf, rng.random(n), side="right"), len(weights_cdf) - 1)


def hex_ids(rng, n, digits=12):
    fmt = "%0" + str(digits) + "x"
    return [fmt % v for v in rng.integers(0, 16 ** digits, n, dtype=np.int64).tolist()]


class Vocabulary:
    """Per-seed pools of the many distinct values real traffic carries (IPs, users, products)."""

    FIRST = ("anna", "ben", "carla", "dev", "emma", "farid", "gina", "hugo", "ines", "jon", "kai", "lena",
             "marco", "nora", "omar", "pia", "quinn", "rosa", "sam", "tara", "uwe", "vera", "wei", "yara", "zoe")
    LAST = ("smith", "mueller", "garcia", "rossi", "kim", "novak", "silva", "jensen", "dubois", "tanaka",
            "okafor", "ivanova", "costa", "berg", "lopez", "weber", "khan", "moreau", "larsen", "ortiz")
    WORDS = ("shoes", "jacket", "lamp", "coffee", "kettle", "desk", "chair", "phone case", "charger",
             "headphones", "backpack", "socks", "mug", "tent", "bike light", "yoga mat", "watch", "scarf",
             "blender", "pillow", "notebook", "pen", "monitor", "keyboard", "mouse", "cable", "sunglasses")
    CATEGORIES = ("electronics", "home", "kitchen", "outdoor", "fashion", "sports", "books", "toys", "garden")
    UPSTREAMS = ("payment-gateway", "inventory-service", "shipping-api", "recommendation-svc")
    USER_AGENTS = (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3 Safari/605.1.15",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Mobile Safari/537.36",
        "Mozilla/5.0 (X11; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:123.0) Gecko/20100101 Firefox/123.0",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36 Edg/122.0.0.0",
        "Mozilla/5.0 (iPad; CPU OS 17_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "curl/8.5.0",
        "python-requests/2.31.0",
        "ShopApp/4.12.1 (iOS 17.3; iPhone14,2)",
        "ShopApp/4.12.0 (Android 14; SM-S911B)",
        "Prometheus/2.50.1",
    )
    UA_WEIGHTS = (24, 12, 16, 14, 5, 4, 6, 3, 3, 2, 1, 1, 5, 4, 0.5)

    def __init__(self, rng, n_ips=6000, n_users=20000, n_products=5000):
        octets = rng.integers(1, 255, size=(n_ips, 4))
        octets[:, 0] = rng.choice([23, 31, 45, 62, 77, 81, 89, 91, 93, 104, 151, 176, 185, 203, 212], n_ips)
        self.ips = [f"{a}.{b}.{c}.{d}" for a, b, c, d in octets.tolist()]
        # Zipf-like popularity: a few heavy clients (offices, crawlers, NAT) and a long tail.
        self.ip_p = cdf(1.0 / np.arange(1, n_ips + 1) ** 0.9)
        first = rng.integers(0, len(self.FIRST), n_users)
        last = rng.integers(0, len(self.LAST), n_users)
        num = rng.integers(1, 999, n_users)
        self.users = [f"{self.FIRST[f]}.{self.LAST[la]}{n}" for f, la, n in zip(first, last, num)]
        self.user_p = cdf(1.0 / np.arange(1, n_users + 1) ** 0.6)
        self.n_products = n_products
        self.product_p = cdf(1.0 / np.arange(1, n_products + 1) ** 0.8)
        self.product_ids = rng.permutation(np.arange(1000, 1000 + n_products))
        self.assets = [f"/static/{kind}/{name}.{h}.{ext}" for kind, name, ext in
                       [("js", "app", "js"), ("js", "vendor", "js"), ("js", "checkout", "js"),
                        ("css", "main", "css"), ("css", "print", "css"), ("fonts", "inter", "woff2"),
                        ("img", "logo", "svg"), ("img", "hero", "webp"), ("img", "sprite", "png")]
                       for h in hex_ids(rng, 3, 8)]
        self.ua_p = cdf(self.UA_WEIGHTS)

    def pick(self, rng, pool, weights_cdf, n):
        """n draws from pool, weighted by a cumulative distribution (None: uniform)."""
        if weights_cdf is None:
            return [pool[i] for i in rng.integers(0, len(pool), n).tolist()]
        return [pool[i] for i in draw(rng, weights_cdf, n).tolist()]

    def products(self, rng, n):
        return self.product_ids[draw(rng, self.product_p, n)]


def affected_share(inc, rates, floor_per_minute=1.0):
    """Share of lines an unusual value takes: the incident's fraction, but at least ~1 line a minute
    when traffic is thin (a misbehaving node keeps answering at night too)."""
    return np.clip(np.maximum(inc.detail["fraction"], floor_per_minute / np.maximum(rates, 1e-9)), 0.0, 1.0)


def _load(rates, mean_rate):
    """Load factor of each minute relative to the average: latency grows a little with traffic."""
    return np.clip(rates / max(mean_rate, 1e-9), 0.2, 5.0)


class WebService:
    """nginx combined access log: many clients, paths and agents; status mix and response times."""

    name = "web"
    # kind, method, weight, median response time (s), median bytes
    ENDPOINTS = (
        ("home", "GET", 5.0, 0.035, 18000), ("product", "GET", 18.0, 0.060, 42000),
        ("api_product", "GET", 12.0, 0.025, 3200), ("search", "GET", 8.0, 0.090, 9000),
        ("static", "GET", 24.0, 0.002, 60000), ("image", "GET", 11.0, 0.004, 85000),
        ("cart", "GET", 6.0, 0.030, 2100), ("cart_add", "POST", 3.0, 0.045, 600),
        ("checkout", "POST", 1.5, 0.310, 900), ("login", "POST", 2.5, 0.120, 400),
        ("orders", "GET", 3.0, 0.070, 5400), ("misc", "GET", 3.0, 0.003, 1500),
        ("probe", "GET", 0.4, 0.001, 150),
    )
    MISC = ("/robots.txt", "/favicon.ico", "/sitemap.xml", "/about", "/contact", "/help/shipping",
            "/help/returns", "/terms")
    PROBES = ("/wp-login.php", "/.env", "/admin.php", "/phpmyadmin/index.php", "/.git/config",
              "/xmlrpc.php", "/cgi-bin/luci", "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php")
    REFERERS = ("-", "https://shop.example.com/", "https://www.google.com/", "https://shop.example.com/cart",
                "https://www.bing.com/", "https://shop.example.com/search", "https://duckduckgo.com/")
    MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

    def __init__(self, rng, vocab, mean_rate):
        self.rng, self.vocab, self.mean_rate = rng, vocab, mean_rate
        w = np.array([e[2] for e in self.ENDPOINTS])
        self.ep_p = w / w.sum()
        self.login_share = self.ep_p[[e[0] for e in self.ENDPOINTS].index("login")]

    def clf_times(self, ts):
        """Common Log Format times ('[02/Mar/2026:10:00:00 +0000]'), formatting each second once."""
        secs, inverse = np.unique(ts.astype(np.int64), return_inverse=True)
        text = []
        for t in secs.astype("datetime64[s]").astype(object).tolist():
            text.append(f"[{t.day:02d}/{self.MONTHS[t.month - 1]}/{t.year}:{t.hour:02d}:{t.minute:02d}:"
                        f"{t.second:02d} +0000]")
        return [text[i] for i in inverse.tolist()]

    def paths(self, kind, n):
        rng, v = self.rng, self.vocab
        if kind == "home":
            return ["/"] * n
        if kind == "product":
            return [f"/products/{p}" for p in v.products(rng, n).tolist()]
        if kind == "api_product":
            return [f"/api/v1/products/{p}" for p in v.products(rng, n).tolist()]
        if kind == "search":
            words = rng.integers(0, len(v.WORDS), n).tolist()
            pages = np.minimum(rng.geometric(0.6, n), 9).tolist()
            return [f"/api/v1/search?q={v.WORDS[w].replace(' ', '+')}&page={p}" for w, p in zip(words, pages)]
        if kind == "static":
            return [v.assets[i] for i in rng.integers(0, len(v.assets), n).tolist()]
        if kind == "image":
            return [f"/images/products/{p}/{k}.jpg" for p, k in zip(v.products(rng, n).tolist(),
                                                                     rng.integers(1, 6, n).tolist())]
        if kind == "cart":
            return ["/api/v1/cart"] * n
        if kind == "cart_add":
            return ["/api/v1/cart/items"] * n
        if kind == "checkout":
            return ["/api/v1/checkout"] * n
        if kind == "login":
            return ["/api/v1/login"] * n
        if kind == "orders":
            return [f"/api/v1/users/{u}/orders" for u in rng.integers(10000, 99999, n).tolist()]
        if kind == "misc":
            return [self.MISC[i] for i in rng.integers(0, len(self.MISC), n).tolist()]
        return [self.PROBES[i] for i in rng.integers(0, len(self.PROBES), n).tolist()]

    def statuses(self, kind, n):
        u = self.rng.random(n)
        s = np.full(n, 200)
        if kind in ("static", "image"):
            s[u < 0.25] = 304
            s[u > 0.985] = 404
        elif kind == "product":
            s[u > 0.99] = 404
        elif kind == "login":
            s[u < 0.11] = 401
            s[(u >= 0.11) & (u < 0.115)] = 429
        elif kind == "checkout":
            s[u < 0.03] = 400
            s[(u >= 0.03) & (u < 0.035)] = 409
            s[u >= 0.035] = 201
        elif kind == "cart_add":
            s[:] = 201
            s[u < 0.01] = 400
        elif kind == "orders":
            s[u < 0.03] = 401
        elif kind == "misc":
            s[u < 0.08] = 301
        elif kind == "probe":
            s[:] = 404
            s[u < 0.1] = 403
        # Servers fail now and then under normal operation too.
        e = self.rng.random(n)
        s[e < 0.0009] = 500
        s[e < 0.0004] = 502
        s[e < 0.0002] = 503
        s[e < 0.0001] = 504
        return s

    def generate(self, t0, rates, incidents):
        rng = self.rng
        ts = arrivals(rng, t0, rates)
        n = ts.size
        ep = rng.choice(len(self.ENDPOINTS), n, p=self.ep_p)
        path = [""] * n
        status = np.empty(n, np.int64)
        rt = np.empty(n)
        size = np.empty(n)
        method = [""] * n
        minute_of = np.minimum(((ts - t0) // 60).astype(int), len(rates) - 1)
        load = _load(rates, self.mean_rate)[minute_of]
        for k, (kind, meth, _w, rt_med, b_med) in enumerate(self.ENDPOINTS):
            idx = np.flatnonzero(ep == k)
            if idx.size == 0:
                continue
            for i, p in zip(idx.tolist(), self.paths(kind, idx.size)):
                path[i] = p
                method[i] = meth
            status[idx] = self.statuses(kind, idx.size)
            rt[idx] = lognormal(rng, rt_med, 0.7, idx.size) * (0.8 + 0.2 * load[idx])
            size[idx] = lognormal(rng, b_med, 0.5, idx.size)
        tag = np.full(n, NO_TAG, np.int32)
        ips = self.vocab.pick(rng, self.vocab.ips, self.vocab.ip_p, n)
        uas = self.vocab.pick(rng, self.vocab.USER_AGENTS, self.vocab.ua_p, n)
        for inc in incidents:
            if inc.kind == "error_burst":
                hit = np.flatnonzero(in_window(ts, inc) & (rng.random(n) < inc.detail["fraction"]))
                status[hit] = rng.choice(inc.detail["statuses"], hit.size)
                rt[hit] = lognormal(rng, 2.5, 0.8, hit.size)
                tag[hit] = inc.id
            elif inc.kind == "unusual_value":
                hit = np.flatnonzero(in_window(ts, inc) & (rng.random(n) < affected_share(inc, rates)[minute_of]))
                status[hit] = inc.detail["value"]
                tag[hit] = inc.id
        size[status == 304] = 0
        errors = status >= 400
        size[errors] = lognormal(rng, 380.0, 0.3, int(errors.sum()))
        refs = [self.REFERERS[i] for i in rng.choice(len(self.REFERERS), n, p=[.45, .2, .15, .08, .04, .05, .03]).tolist()]
        lvl = np.where(status >= 500, ERROR, INFO).astype(np.int8)
        msgs = [f'{ip} - - {when} "{m} {p} HTTP/1.1" {st} {b} "{r}" "{ua}" rt={t:.3f}'
                for ip, when, m, p, st, b, r, ua, t in zip(ips, self.clf_times(ts), method, path, status.tolist(),
                                                           size.astype(np.int64).tolist(), refs, uas, rt.tolist())]
        ev = Events()
        ev.add(ts, msgs, lvl, tag)
        for inc in incidents:
            if inc.kind == "volume_spike":
                self.login_flood(ev, t0, rates, inc)
        return ev

    def login_flood(self, ev, t0, rates, inc):
        """Credential stuffing: the login endpoint at many times its normal rate from a few clients."""
        rng = self.rng
        per_min = np.maximum(rates * self.login_share * (inc.detail["factor"] - 1.0), 20.0)
        ts = arrivals(rng, t0, per_min)
        ts = ts[in_window(ts, inc)]
        n = ts.size
        attackers = inc.detail["ips"]
        ips = [attackers[i] for i in rng.integers(0, len(attackers), n).tolist()]
        status = np.where(rng.random(n) < 0.97, 401, 200).tolist()
        rt = lognormal(rng, 0.12, 0.5, n).tolist()
        ua = inc.detail["agent"]
        msgs = [f'{ip} - - {when} "POST /api/v1/login HTTP/1.1" {s} {390 + s % 7} "-" "{ua}" rt={r:.3f}'
                for ip, when, s, r in zip(ips, self.clf_times(ts), status, rt)]
        ev.add(ts, msgs, INFO, inc.id)


class Step:
    """One step of a request workflow: its text, level, typical delay and when it happens.

    delay_key names a per-session array in the context that is this step's delay (so that a
    logged duration and the time the step really took agree); share is how often `when` holds.
    """

    def __init__(self, key, render, delay_ms, level=INFO, prob=1.0, when=None, delay_key=None, share=1.0):
        self.key, self.render, self.delay_ms, self.level = key, render, delay_ms, level
        self.prob, self.when, self.delay_key, self.share = prob, when, delay_key, share


class AppService:
    """Application request workflows (ordered steps keyed by a request id) plus background lines."""

    name = "app"

    def __init__(self, rng, vocab, mean_rate):
        self.rng, self.vocab, self.mean_rate = rng, vocab, mean_rate
        self.workflows = self.build_workflows()
        w = np.array([wf[1] for wf in self.workflows])
        self.wf_p = w / w.sum()
        steps = np.array([sum(s.prob * s.share for s in wf[2]) for wf in self.workflows])
        # Background lines (cache misses, gc, retries) are ~6% of the app's volume.
        self.lines_per_session = float(self.wf_p @ steps) / 0.94

    def build_workflows(self):
        def received(path):
            return lambda c, i: [f"request {c['rid'][k]} received path={path} client={c['ip'][k]}" for k in i]

        def auth(c, i):
            return [f"auth ok user={c['user'][k]} method={c['method'][k]} req={c['rid'][k]}" for k in i]

        def completed(c, i):
            return [f"request {c['rid'][k]} completed in {c['elapsed'][k]:.0f} ms status={c['status'][k]}" for k in i]

        def slow(c, i):
            return [f"slow request {c['rid'][k]} took {c['elapsed'][k]:.0f} ms threshold=2000 ms" for k in i]

        def cart(c, i):
            return [f"cart loaded items={c['items'][k]} total={c['amount'][k]:.2f} req={c['rid'][k]}" for k in i]

        def reserve(c, i):
            return [f"inventory reserved items={c['items'][k]} warehouse=wh-{c['wh'][k]} req={c['rid'][k]}" for k in i]

        def pay_ok(c, i):
            return [f"payment authorised amount={c['amount'][k]:.2f} currency=EUR provider={c['provider'][k]} "
                    f"req={c['rid'][k]}" for k in i]

        def pay_declined(c, i):
            return [f"payment declined reason={c['reason'][k]} provider={c['provider'][k]} req={c['rid'][k]}" for k in i]

        def order(c, i):
            return [f"order {c['oid'][k]} created items={c['items'][k]} req={c['rid'][k]}" for k in i]

        def catalog(c, i):
            return [f"catalog query category={c['category'][k]} results={c['results'][k]} req={c['rid'][k]}" for k in i]

        def recos(c, i):
            return [f"recommendations served count={c['items'][k]} model=v{c['wh'][k] + 11} req={c['rid'][k]}" for k in i]

        def anon(c, i):
            return [f"anonymous session sid={c['oid'][k]} req={c['rid'][k]}" for k in i]

        def search(c, i):
            return [f"search query terms={c['items'][k]} hits={c['results'][k]} took {c['search_ms_text'][k]:.1f} ms "
                    f"req={c['rid'][k]}" for k in i]

        def login_try(c, i):
            return [f"login attempt user={c['user'][k]} req={c['rid'][k]}" for k in i]

        def session_new(c, i):
            return [f"session created user={c['user'][k]} ttl=3600 req={c['rid'][k]}" for k in i]

        def login_fail(c, i):
            return [f"login failed user={c['user'][k]} reason=bad_password req={c['rid'][k]}" for k in i]

        def profile(c, i):
            return [f"profile updated user={c['user'][k]} fields={c['items'][k]} req={c['rid'][k]}" for k in i]

        def ok(c):
            return ~c["fail"]

        def bad(c):
            return c["fail"]

        done = [Step("slow", slow, 0.3, WARN, share=0.005), Step("completed", completed, 2.0)]
        return [
            ("checkout", 0.12, [Step("received", received("/api/v1/checkout"), 0.5), Step("auth", auth, 8.0),
                                Step("cart", cart, 15.0), Step("reserve", reserve, 25.0, prob=0.9),
                                Step("payment", pay_ok, 280.0, when=ok, share=0.95),
                                Step("payment", pay_declined, 240.0, WARN, when=bad, share=0.05),
                                Step("order", order, 12.0, when=ok, share=0.95)] + done),
            ("browse", 0.50, [Step("received", received("/api/v1/products"), 0.5),
                              Step("auth", auth, 7.0, prob=0.6), Step("anon", anon, 2.0, when=lambda c: ~c["authed"], share=0.4),
                              Step("catalog", catalog, 30.0), Step("recos", recos, 45.0, prob=0.5)] + done),
            ("search", 0.18, [Step("received", received("/api/v1/search"), 0.5), Step("search", search, 60.0, delay_key="search_ms")] + done),
            ("login", 0.15, [Step("received", received("/api/v1/login"), 0.5), Step("login", login_try, 3.0),
                             Step("session", session_new, 40.0, when=ok, share=0.89),
                             Step("login_failed", login_fail, 35.0, WARN, when=bad, share=0.11)] + done),
            ("profile", 0.05, [Step("received", received("/api/v1/profile"), 0.5), Step("auth", auth, 8.0),
                               Step("profile", profile, 35.0)] + done),
        ]

    def context(self, name, n, t_start, incidents, forced):
        rng, v = self.rng, self.vocab
        c = {"rid": hex_ids(rng, n), "ip": v.pick(rng, v.ips, v.ip_p, n),
             "user": v.pick(rng, v.users, v.user_p, n),
             "method": [AUTH_METHODS[i] for i in rng.choice(3, n, p=[0.55, 0.35, 0.10]).tolist()],
             "provider": [PAYMENT_PROVIDERS[i] for i in rng.choice(3, n, p=[0.6, 0.25, 0.15]).tolist()],
             "reason": [("insufficient_funds", "card_expired", "do_not_honor")[i] for i in rng.integers(0, 3, n).tolist()],
             "items": np.minimum(rng.geometric(0.35, n), 40).tolist(),
             "amount": lognormal(rng, 48.0, 0.8, n).tolist(),
             "wh": rng.integers(1, 5, n).tolist(), "oid": hex_ids(rng, n, 10),
             "category": [v.CATEGORIES[i] for i in rng.integers(0, len(v.CATEGORIES), n).tolist()],
             "results": rng.poisson(35, n).tolist(), "search_ms": lognormal(rng, 45.0, 0.5, n),
             "fail": rng.random(n) < {"checkout": 0.05, "login": 0.11}.get(name, 0.0),
             "authed": np.zeros(n, bool), "tag": np.full(n, NO_TAG, np.int32), "step_tag": {}}
        for inc in incidents:
            win = (t_start >= inc.start) & (t_start < inc.end)
            if inc.kind == "unusual_value" and name in inc.detail["workflows"]:
                hit = np.flatnonzero(win & ((rng.random(n) < inc.detail["fraction"]) | (forced == inc.id)))
                for k in hit.tolist():
                    c[inc.detail["field"]][k] = inc.detail["value"]
                # Only the step that logs the field carries the new value.
                step = {"provider": "payment", "method": "auth"}[inc.detail["field"]]
                tag = c["tag"].copy()
                tag[hit] = inc.id
                c["step_tag"][step] = tag
            elif inc.kind == "latency_drift" and name == "search":
                c["search_ms"][win] *= inc.detail["factor"] * lognormal(rng, 1.0, 0.15, int(win.sum()))
                # Only the line that carries the drifting field belongs to the incident.
                c["step_tag"]["search"] = np.where(win, inc.id, c["tag"])
        return c

    def run_workflow(self, ev, name, weight_steps, t_start, load, incidents, forced):
        """Emit all steps of n sessions of one workflow type, vectorised step by step.

        forced: per session, the id of an incident that must affect it (NO_TAG for none)."""
        rng = self.rng
        n = t_start.size
        c = self.context(name, n, t_start, incidents, forced)
        broken = None
        for inc in incidents:
            if inc.kind == "broken_workflow" and inc.detail["workflow"] == name:
                hit = (t_start >= inc.start) & (t_start < inc.end)
                hit &= (rng.random(n) < inc.detail["fraction"]) | (forced == inc.id)
                broken = (inc, hit)
                c["tag"][hit] = inc.id
        slow_factor = 0.7 + 0.3 * load
        elapsed = np.zeros(n)
        plan = []
        for step in weight_steps:
            if step.key in ("slow", "completed"):
                continue
            take = rng.random(n) < step.prob
            if step.when is not None:
                take &= step.when(c)
            if step.key == "auth":
                c["authed"] = c["authed"] | take
            if broken is not None and broken[0].detail["mode"] == "skip" and step.key == broken[0].detail["step"]:
                take &= ~broken[1]
            if step.delay_key:
                delay = c[step.delay_key] * slow_factor
                c[step.delay_key] = delay
            else:
                delay = lognormal(rng, step.delay_ms, 0.6, n) * slow_factor
            elapsed = elapsed + np.where(take, delay, 0.0)
            plan.append((step, take, elapsed.copy()))
        c["search_ms_text"] = c["search_ms"].tolist()
        # Rare stalls (GC, lock waits, a slow upstream) give the latency its long tail.
        elapsed += np.where(rng.random(n) < 0.004, lognormal(rng, 2500.0, 0.5, n), 0.0)
        c["elapsed"] = elapsed.tolist()
        c["status"] = self.final_status(name, c)
        finish = np.ones(n, bool)
        if broken is not None and broken[0].detail["mode"] == "unfinished":
            finish &= ~broken[1]
        end_ms = elapsed + lognormal(rng, 2.0, 0.5, n)
        for step in weight_steps:
            if step.key == "slow":
                take = (elapsed > 2000) & finish
                plan.append((step, take, end_ms - 0.5))
            elif step.key == "completed":
                plan.append((step, finish, end_ms))
        if broken is not None and broken[0].detail["mode"] == "order":
            self.swap_steps(plan, broken[0].detail["step"], broken[1])
        for step, take, at_ms in plan:
            idx = np.flatnonzero(take)
            if idx.size:
                tag = c["step_tag"].get(step.key, c["tag"])[idx]
                ev.add(t_start[idx] + at_ms[idx] / 1000.0, step.render(c, idx.tolist()), step.level, tag)

    def swap_steps(self, plan, key, hit):
        """Wrong order: the named step is logged after the request has already completed."""
        done_at = [p for p in plan if p[0].key == "completed"][0][2]
        for step, _take, at_ms in plan:
            if step.key == key:
                at_ms[hit] = done_at[hit] + 5.0 + 40.0 * self.rng.random(int(hit.sum()))

    def final_status(self, name, c):
        fail = c["fail"].tolist()
        code = {"checkout": 402, "login": 401}.get(name, 200)
        return [code if f else 200 for f in fail]

    def generate(self, t0, rates, incidents):
        rng = self.rng
        ev = Events()
        session_rates = rates / self.lines_per_session
        t_start = arrivals(rng, t0, session_rates)
        wf = rng.choice(len(self.workflows), t_start.size, p=self.wf_p)
        forced = np.full(t_start.size, NO_TAG, np.int32)
        t_start, wf, forced = self.incident_sessions(t0, len(rates), incidents, t_start, wf, forced)
        minute = np.minimum(((t_start - t0) // 60).astype(int), len(rates) - 1)
        load = _load(rates, self.mean_rate)[minute]
        for k, (name, _w, steps) in enumerate(self.workflows):
            sel = wf == k
            self.run_workflow(ev, name, steps, t_start[sel], load[sel], incidents, forced[sel])
        self.background(ev, t0, rates)
        for inc in incidents:
            self.incident_lines(ev, t0, rates, inc)
        return ev

    def incident_sessions(self, t0, n_minutes, incidents, t_start, wf, forced):
        """A broken or odd client keeps sending a trickle of requests even when real traffic is thin
        (at night a workflow may see no session at all in a short window)."""
        names = [w[0] for w in self.workflows]
        for inc in incidents:
            if inc.kind == "broken_workflow":
                name = inc.detail["workflow"]
            elif inc.kind == "unusual_value":
                name = inc.detail["workflows"][0]
            else:
                continue
            extra = incident_arrivals(self.rng, t0, n_minutes, inc, SESSION_FLOOR_PER_MIN)
            t_start = np.concatenate([t_start, extra])
            wf = np.concatenate([wf, np.full(extra.size, names.index(name))])
            forced = np.concatenate([forced, np.full(extra.size, inc.id, np.int32)])
        return t_start, wf, forced

    def background(self, ev, t0, rates):
        rng, v = self.rng, self.vocab
        ts = arrivals(rng, t0, rates * 0.05)
        keys = v.products(rng, ts.size).tolist()
        ev.add(ts, [f"cache miss key=product:{p} ttl={t}" for p, t in zip(keys, rng.choice([60, 300, 900], ts.size).tolist())],
               DEBUG)
        ts = arrivals(rng, t0, np.full(len(rates), 0.25))
        ev.add(ts, [f"gc pause {p:.1f} ms heap={h} MB" for p, h in zip(lognormal(rng, 12.0, 0.6, ts.size).tolist(),
                                                                    rng.integers(900, 2400, ts.size).tolist())], INFO)
        # Rare but normal warnings and errors: a few a day each, so the first day already has them.
        ts = arrivals(rng, t0, np.full(len(rates), 0.6 / 60))
        ev.add(ts, [f"retrying call to {v.UPSTREAMS[u]} attempt={a}" for u, a in
                    zip(rng.integers(0, 4, ts.size).tolist(), rng.integers(2, 4, ts.size).tolist())], WARN)
        self.timeouts(ev, arrivals(rng, t0, np.full(len(rates), 0.8 / 60)), NO_TAG)
        ts = arrivals(rng, t0, np.full(len(rates), 0.25 / 60))
        ev.add(ts, [f"db connection reset by peer host={DB_HOST_WRITE} pool=main" for _ in range(ts.size)], ERROR)

    def timeouts(self, ev, ts, tag, upstream=None):
        """Upstream timeouts: a few a day spread over upstreams; in a burst, all to the failing one."""
        rng = self.rng
        ups = rng.choice(len(self.vocab.UPSTREAMS), ts.size, p=[0.45, 0.3, 0.15, 0.1]).tolist()
        if upstream is not None:
            ups = [self.vocab.UPSTREAMS.index(upstream)] * ts.size
        msgs = [f"upstream {self.vocab.UPSTREAMS[u]} timeout after 5000 ms request {r}"
                for u, r in zip(ups, hex_ids(rng, ts.size))]
        ev.add(ts, msgs, ERROR, tag)

    def incident_lines(self, ev, t0, rates, inc):
        rng, v = self.rng, self.vocab
        if inc.kind == "error_burst":
            ts = incident_arrivals(rng, t0, len(rates), inc, inc.detail["per_minute"])
            self.timeouts(ev, ts, inc.id, upstream=inc.detail["upstream"])
        elif inc.kind == "new_error":
            ts = incident_arrivals(rng, t0, len(rates), inc, inc.detail["per_minute"])
            ev.add(ts, [inc.detail["template"].format(n=x, id=h) for x, h in
                        zip(rng.integers(10, 999, ts.size).tolist(), hex_ids(rng, ts.size))],
                   inc.detail["level"], inc.id)
        elif inc.kind == "volume_spike":
            ts = arrivals(rng, t0, rates * 0.05 * (inc.detail["factor"] - 1.0))
            ts = ts[in_window(ts, inc)]
            keys = v.products(rng, ts.size).tolist()
            ev.add(ts, [f"cache miss key=product:{p} ttl=300" for p in keys], DEBUG, inc.id)


class DbService:
    """Database log: queries with latency, rows and host, pool stats, checkpoints, vacuum, rare warnings."""

    name = "db"
    # op, table, weight, median ms, median rows
    QUERIES = (
        ("select", "products", 30, 2.1, 24), ("select", "orders", 12, 6.5, 40), ("select", "users", 14, 1.2, 1),
        ("select", "sessions", 16, 0.8, 1), ("select", "cart_items", 9, 1.6, 6), ("insert", "orders", 2, 4.0, 1),
        ("update", "inventory", 4, 3.2, 3), ("update", "sessions", 7, 1.1, 1), ("delete", "sessions", 1.5, 9.0, 40),
        ("insert", "audit_log", 4.5, 0.9, 1),
    )

    def __init__(self, rng, vocab, mean_rate):
        self.rng, self.vocab, self.mean_rate = rng, vocab, mean_rate
        w = np.array([q[2] for q in self.QUERIES], float)
        self.q_p = w / w.sum()
        self.query_keys = [f"{q[0]}:{q[1]}" for q in self.QUERIES]
        self.pool_phase = rng.uniform(0, 30)
        self.ckpt_phase = rng.uniform(0, 300)

    def generate(self, t0, rates, incidents):
        rng = self.rng
        ev = Events()
        ts = arrivals(rng, t0, rates)
        n = ts.size
        minute = np.minimum(((ts - t0) // 60).astype(int), len(rates) - 1)
        load = _load(rates, self.mean_rate)[minute]
        q = rng.choice(len(self.QUERIES), n, p=self.q_p)
        med = np.array([x[3] for x in self.QUERIES])[q]
        ms = lognormal(rng, 1.0, 0.55, n) * med * (0.75 + 0.25 * load)
        # Lock waits and cold caches: a small share of queries are much slower.
        ms *= np.where(rng.random(n) < 0.0015, lognormal(rng, 60.0, 0.6, n), 1.0)
        rows = rng.poisson(np.array([x[4] for x in self.QUERIES], float)[q])
        is_read_q = np.array([x[0] == "select" for x in self.QUERIES])
        is_read = is_read_q[q]
        host = np.where(is_read, rng.choice(3, n, p=[0.4, 0.35, 0.25]), -1)
        hosts = list(DB_HOSTS_READ) + [DB_HOST_WRITE]
        host_names = [hosts[h] for h in host.tolist()]
        tag = np.full(n, NO_TAG, np.int32)
        for inc in incidents:
            win = in_window(ts, inc)
            if inc.kind == "latency_drift":
                hit = np.flatnonzero(win & (q == self.query_keys.index(inc.detail["query"])))
                ms[hit] *= inc.detail["factor"] * lognormal(rng, 1.0, 0.15, hit.size)
                tag[hit] = inc.id
            elif inc.kind == "unusual_value":
                share = affected_share(inc, rates * self.q_p[is_read_q].sum())[minute]
                hit = np.flatnonzero(win & is_read & (rng.random(n) < share))
                for k in hit.tolist():
                    host_names[k] = inc.detail["value"]
                tag[hit] = inc.id
        slow = ms > 500.0
        lvl = np.where(slow, WARN, INFO).astype(np.int8)
        msgs = [f"{'slow query' if s else 'query'} {self.QUERIES[k][0]} on {self.QUERIES[k][1]} took {m:.1f} ms "
                f"rows={r} host={h}" for s, k, m, r, h in zip(slow.tolist(), q.tolist(), ms.tolist(), rows.tolist(), host_names)]
        ev.add(ts, msgs, lvl, tag)
        self.housekeeping(ev, t0, rates)
        for inc in incidents:
            self.incident_lines(ev, t0, rates, inc)
        return ev

    def housekeeping(self, ev, t0, rates):
        rng = self.rng
        t1 = t0 + 60 * len(rates)
        ts = self.periodic(t0, t1, 30.0, self.pool_phase)
        if ts.size:
            load = _load(rates, self.mean_rate)[np.minimum(((ts - t0) // 60).astype(int), len(rates) - 1)]
            active = rng.poisson(8 * load)
            idle = np.maximum(40 - active, 0)
            waiting = rng.poisson(0.05 * load ** 3)
            ev.add(ts, [f"connection pool stats active={a} idle={i} waiting={w}" for a, i, w in
                        zip(active.tolist(), idle.tolist(), waiting.tolist())], INFO)
        ts = self.periodic(t0, t1, 300.0, self.ckpt_phase)
        bufs = rng.integers(200, 9000, ts.size)
        ev.add(ts, [f"checkpoint complete: wrote {b} buffers ({b / 163.84:.1f}%) in {s:.3f} s" for b, s in
                    zip(bufs.tolist(), lognormal(rng, 2.5, 0.4, ts.size).tolist())], INFO)
        ts = arrivals(rng, t0, np.full(len(rates), 1.5 / 60))
        tables = [self.QUERIES[i][1] for i in rng.integers(0, len(self.QUERIES), ts.size).tolist()]
        ev.add(ts, [f"autovacuum: processing table {t} removed {d} dead tuples" for t, d in
                    zip(tables, rng.integers(100, 50000, ts.size).tolist())], INFO)
        # A few a day: often enough that the first day has seen each normal error.
        ts = arrivals(rng, t0, np.full(len(rates), 0.5 / 60))
        self.deadlocks(ev, ts, NO_TAG)
        ts = arrivals(rng, t0, np.full(len(rates), 0.12 / 60))
        ev.add(ts, [f"connection from {ip} rejected: too many clients already" for ip in
                    self.vocab.pick(rng, self.vocab.ips[:50], None, ts.size)], WARN)

    def deadlocks(self, ev, ts, tag, table=None):
        """Deadlocks happen mostly on the hot inventory table; a burst hits one table."""
        pick = self.rng.choice(2, ts.size, p=[0.7, 0.3]).tolist()
        tables = [table or ("inventory", "orders")[i] for i in pick]
        ev.add(ts, [f"deadlock detected on table {t} txn={x}" for t, x in
                    zip(tables, self.rng.integers(10 ** 6, 10 ** 7, ts.size).tolist())], ERROR, tag)

    def periodic(self, t0, t1, every, phase):
        first = np.ceil((t0 - phase) / every) * every + phase
        ts = np.arange(first, t1, every)
        return ts + self.rng.uniform(0, 0.05, ts.size)

    def incident_lines(self, ev, t0, rates, inc):
        rng = self.rng
        if inc.kind == "error_burst":
            ts = incident_arrivals(rng, t0, len(rates), inc, inc.detail["per_minute"])
            self.deadlocks(ev, ts, inc.id, table="inventory")
        elif inc.kind == "new_error":
            ts = incident_arrivals(rng, t0, len(rates), inc, inc.detail["per_minute"])
            ev.add(ts, [inc.detail["template"].format(n=x, id=h) for x, h in
                        zip(rng.integers(10, 999, ts.size).tolist(), hex_ids(rng, ts.size))],
                   inc.detail["level"], inc.id)
        elif inc.kind == "volume_spike":
            share = self.q_p[self.query_keys.index("select:sessions")]
            ts = arrivals(rng, t0, rates * share * (inc.detail["factor"] - 1.0))
            ts = ts[in_window(ts, inc)]
            ms = lognormal(rng, 0.8, 0.55, ts.size)
            hosts = [DB_HOSTS_READ[i] for i in rng.integers(0, 3, ts.size).tolist()]
            ev.add(ts, [f"query select on sessions took {m:.1f} ms rows=1 host={h}" for m, h in zip(ms.tolist(), hosts)],
                   INFO, inc.id)


class BatchService:
    """Cron-like jobs: nightly jobs at fixed hours, an hourly cleanup and a weekly reindex (on Mondays)."""

    name = "batch"
    # name, hour, minute, median duration (s), progress unit, weekly weekday (None = daily)
    JOBS = (("nightly-backup", 2, 0, 1800.0, "files", None), ("etl-orders", 3, 30, 1200.0, "rows", None),
            ("report-daily", 6, 0, 300.0, "pages", None), ("weekly-reindex", 4, 15, 2400.0, "indexes", 0))

    def __init__(self, rng, vocab, mean_rate):
        self.rng, self.vocab = rng, vocab
        self.run_id = 1000

    def generate(self, t0, rates, incidents):
        ev = Events()
        t1 = t0 + 60 * len(rates)
        day0 = np.floor(t0 / 86400) * 86400
        for day in (day0 - 86400, day0):
            weekday = int((day // 86400 + 3) % 7)  # 1970-01-01 was a Thursday; Monday = 0
            for name, hour, minute, dur, unit, weekly in self.JOBS:
                start = day + hour * 3600 + minute * 60 + self.jitter(day, name)
                if t0 <= start < t1 and (weekly is None or weekly == weekday):
                    self.job(ev, name, start, dur, unit)
            for hour in range(24):
                start = day + hour * 3600 + 300 + self.jitter(day + hour, "cleanup")
                if t0 <= start < t1:
                    self.cleanup(ev, start)
        for inc in incidents:
            if inc.kind == "new_error":
                per_minute = inc.detail["count"] * 60.0 / (inc.end - inc.start)
                ts = incident_arrivals(self.rng, t0, len(rates), inc, per_minute)
                ev.add(ts, [inc.detail["template"].format(n=x, id=h) for x, h in
                            zip(self.rng.integers(10, 999, ts.size).tolist(), hex_ids(self.rng, ts.size))],
                       inc.detail["level"], inc.id)
        return ev

    @staticmethod
    def jitter(day, name):
        # cron fires on the minute; the job logs its start 0-20 s later (a stable pseudo-random delay).
        return (zlib.crc32(f"{int(day)}:{name}".encode()) % 20000) / 1000.0

    def job(self, ev, name, start, dur, unit):
        rng = self.rng
        self.run_id += 1
        duration = dur * float(np.exp(0.15 * rng.standard_normal()))
        n_prog = max(1, int(duration // 60))
        prog_t = start + np.sort(rng.uniform(5, duration - 5, n_prog))
        done = np.cumsum(rng.integers(50, 5000, n_prog))
        ev.add([start], [f"job {name} started run_id={self.run_id} host=batch-1"], INFO)
        ev.add(prog_t, [f"job {name} progress {unit}={d} run_id={self.run_id}" for d in done.tolist()], INFO)
        ev.add([start + duration], [f"job {name} finished status=ok duration={duration:.1f} s run_id={self.run_id}"], INFO)

    def cleanup(self, ev, start):
        rng = self.rng
        took = float(lognormal(rng, 4.0, 0.3, 1)[0])
        ev.add([start, start + took * 0.9, start + took],
               ["job session-cleanup started", f"removed {int(rng.integers(20, 3000))} expired sessions",
                f"job session-cleanup finished status=ok duration={took:.1f} s"], INFO)


class HealthService:
    """Heartbeats: every checked component reports on a fixed interval, with a latency."""

    name = "health"
    TARGETS = ("web-1", "web-2", "app-1", "app-2", "db-primary-1", "db-replica-1", "cache-1", "queue-1")

    def __init__(self, rng, vocab, mean_rate, interval=15.0):
        self.rng, self.interval = rng, interval
        self.phase = rng.uniform(0, interval, len(self.TARGETS))

    def generate(self, t0, rates, incidents):
        rng = self.rng
        ev = Events()
        t1 = t0 + 60 * len(rates)
        for target, phase in zip(self.TARGETS, self.phase.tolist()):
            first = np.ceil((t0 - phase) / self.interval) * self.interval + phase
            ts = np.arange(first, t1, self.interval)
            ts = ts + rng.uniform(0.0, 0.15, ts.size)
            lat = lognormal(rng, 3.0, 0.5, ts.size)
            slow = lat > 15.0
            ev.add(ts, [f"health check {'slow' if s else 'ok'} target={target} latency_ms={x:.1f} status=up"
                        for s, x in zip(slow.tolist(), lat.tolist())], np.where(slow, WARN, INFO))
        return ev


SERVICES = (WebService, AppService, DbService, BatchService, HealthService)
SOURCES = tuple(s.name for s in SERVICES)
