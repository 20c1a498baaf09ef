#!/usr/bin/env python
"""Check the built HTML book in a real headless browser (Debian's chromium), fully offline.

    python scripts/check_html.py [_build/html]

1. Static check of every page: each resource the page loads (script, stylesheet, image, iframe,
   font, ...) is a relative or localhost URL, and no stylesheet imports anything from outside.
2. The book is served on 127.0.0.1 and every page is loaded in headless chromium with a fresh
   profile, background networking off, and DNS for every host except localhost mapped to
   "not found". Chromium's DOM is dumped after the scripts ran (virtual time budget), and its net log
   is kept.
3. Assertions on the rendered DOM: the page loaded (title and main content), every math element
   was typeset by MathJax (mjx-container elements, no raw ``\\(``, ``\\[`` or ``$...$`` left in the
   text), proofs/definitions and figures are present where the source has them, figures point at
   served files, and the net log shows no request to any host other than localhost.
4. Reader-facing rules, judged from what the browser measured on the rendered page (a probe script
   injected at the top of every page's <head> while it is served; it records JavaScript errors and,
   once MathJax has finished, figures, tables and the visible text as JSON):
   every notebook-output image sits in a numbered, captioned ``<figure>``; no table is wider than
   its box unless an ancestor scrolls horizontally; no table cell reads ``nan``/``NaN``/``None``;
   no JavaScript error; no raw ``{math}``, ``{glue`` or ``$$`` in the visible text.
   The rules are plain functions of that JSON (``judge_measurements``), tested without a browser.

Exit status 0 when every check passes; the report lists each page. ``--report`` prints every
failure per page and exits 0 (for a book whose pages are still being fixed).
"""
from __future__ import annotations

import argparse
import functools
import html
import html.parser
import http.server
import json
import os
import re
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
LOCAL_SCHEMES = {"data", "blob", "about", "chrome", "chrome-extension", "javascript", "mailto", "devtools"}
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")
# attributes through which a page *loads* something (links <a href> are only navigation)
RESOURCE_ATTRS = {
    "script": ("src",), "img": ("src", "srcset"), "iframe": ("src",), "source": ("src", "srcset"),
    "video": ("src", "poster"), "audio": ("src",), "embed": ("src",), "object": ("data",),
    "input": ("src",), "track": ("src",),
}
LINK_LOADING_RELS = {"stylesheet", "preload", "modulepreload", "icon", "shortcut", "prefetch", "manifest",
                     "apple-touch-icon", "preconnect", "dns-prefetch"}
SKIP_TEXT_TAGS = {"script", "style", "pre", "code", "textarea", "noscript", "template", "mjx-assistive-mml",
                  "math", "kbd", "samp"}


# -----------------------------------------------------------------------------
# HTML parsing helpers

class PageParser(html.parser.HTMLParser):
    """Collects loaded resources, anchors, tag/class counts and the visible text of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.resources: list[tuple[str, str]] = []  # (tag.attr, url)
        self.anchors: list[str] = []
        self.tags: dict[str, int] = {}
        self.classes: dict[str, int] = {}
        self.text_parts: list[str] = []
        self.title = ""
        self._stack: list[str] = []
        self._in_title = False
        self._skip_depth = 0

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        self.tags[tag] = self.tags.get(tag, 0) + 1
        for c in a.get("class", "").split():
            self.classes[c] = self.classes.get(c, 0) + 1
        for attr in RESOURCE_ATTRS.get(tag, ()):
            if a.get(attr):
                urls = [u.strip().split(" ")[0] for u in a[attr].split(",")] if attr == "srcset" else [a[attr]]
                self.resources.extend((f"{tag}.{attr}", u) for u in urls if u)
        if tag == "link" and a.get("href"):
            rels = set(a.get("rel", "").lower().split())
            if rels & LINK_LOADING_RELS:
                self.resources.append(("link.href", a["href"]))
        if tag == "a" and a.get("href"):
            self.anchors.append(a["href"])
        if tag == "title":
            self._in_title = True
        if tag in ("br", "img", "meta", "link", "input", "hr", "source", "wbr", "col", "area", "base", "embed",
                   "track", "param"):
            return  # void elements
        self._stack.append(tag)
        if tag in SKIP_TEXT_TAGS:
            self._skip_depth += 1

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        if tag in self._stack:
            while self._stack:
                t = self._stack.pop()
                if t in SKIP_TEXT_TAGS:
                    self._skip_depth -= 1
                if t == tag:
                    break

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        if self._skip_depth == 0:
            self.text_parts.append(data)

    @property
    def text(self) -> str:
        return " ".join(self.text_parts)


def parse(text: str) -> PageParser:
    p = PageParser()
    p.feed(text)
    p.close()
    return p


def is_external(url: str) -> bool:
    """True if loading ``url`` would contact a host other than this machine."""
    url = url.strip()
    if url.startswith("//"):
        return True
    parts = urlsplit(url)
    if not parts.scheme:
        return False  # relative
    if parts.scheme in LOCAL_SCHEMES:
        return False
    if parts.scheme == "file":
        return False
    return (parts.hostname or "") not in LOCAL_HOSTS


# -----------------------------------------------------------------------------
# Server and browser

class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the book; every .html page gets the probe script (the files on disk are unchanged)."""

    log: list[tuple[str, int]] = []

    def send_head(self):
        path = self.translate_path(self.path)
        if not path.endswith(".html") or not os.path.isfile(path):
            return super().send_head()
        import io
        body = inject_probe(Path(path).read_bytes())
        self.send_response(200)
        self.send_header("Content-type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return io.BytesIO(body)

    def log_message(self, format, *args):  # noqa: A002
        pass

    def log_request(self, code="-", size="-"):
        try:
            self.log.append((self.path, int(code)))
        except (TypeError, ValueError):
            self.log.append((self.path, 0))


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # the browser may close a connection early (BrokenPipe); not a page problem


def find_chromium() -> str:
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("error: chromium not found; install it with `apt-get install -y chromium` "
                     "(or run `make chromium`)")


def chromium_dump(chromium: str, url: str, workdir: Path, budget_ms: int, timeout: int) -> tuple[str, Path, str]:
    """Load ``url`` headless; return (DOM after scripts, net log path, stderr)."""
    profile = Path(tempfile.mkdtemp(prefix="profile-", dir=workdir))
    netlog = workdir / f"netlog-{len(list(workdir.glob('netlog-*')))}.json"
    cmd = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-extensions", "--disable-default-apps", "--disable-translate",
        "--disable-domain-reliability", "--disable-client-side-phishing-detection",
        "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication,"
        "CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions",
        "--metrics-recording-only", "--mute-audio", "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
        f"--log-net-log={netlog}", "--net-log-capture-mode=Default",
        f"--virtual-time-budget={budget_ms}", "--run-all-compositor-stages-before-draw",
        "--window-size=1400,2000", "--dump-dom", url,
    ]
    env = dict(os.environ, HOME=str(profile))  # chromium writes caches under $HOME
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"chromium did not finish loading {url} within {timeout} s") from None
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if r.returncode != 0 and not r.stdout.strip():
        raise RuntimeError(f"chromium failed on {url} (rc={r.returncode}):\n{r.stderr[-2000:]}")
    return r.stdout, netlog, r.stderr


def load_netlog(path: Path) -> dict:
    """A chromium net log as JSON (chromium may exit before closing the JSON; repair the tail)."""
    if not path.is_file():
        return {}
    text = path.read_text(errors="replace")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        text = text.rstrip().rstrip(",")
        for tail in ("]}", "\n]}", "}]}"):
            try:
                return json.loads(text + tail)
            except json.JSONDecodeError:
                continue
    raise RuntimeError(f"cannot parse the net log {path}")


def netlog_analysis(path: Path) -> dict[str, set[str]]:
    """Requests and connections of one browser run, from its net log.

    ``page``: URLs requested in the page's context (network isolation key of the served site);
    ``background``: URLs the browser itself tried to fetch (component updater, sign-in, clock);
    ``connected``: remote addresses that packets were sent to (TCP connection attempts, UDP sends);
    ``udp_probes``: UDP sockets connected without sending anything (chromium's IPv6 reachability
    probe connects a UDP socket to a public address to read the local route; no packet leaves).
    """
    log = load_netlog(path)
    out = {"page": set(), "background": set(), "connected": set(), "udp_probes": set()}
    if not log:
        return out
    names = {v: k for k, v in log.get("constants", {}).get("logEventTypes", {}).items()}
    udp_addr: dict[int, str] = {}
    udp_sent: set[int] = set()
    for e in log.get("events", []):
        kind = names.get(e.get("type"), "")
        p = e.get("params") or {}
        src = (e.get("source") or {}).get("id")
        if kind == "URL_REQUEST_START_JOB" and "url" in p:
            nik = str(p.get("network_isolation_key", ""))
            bucket = "page" if any(h in nik for h in ("127.0.0.1", "localhost")) else "background"
            out[bucket].add(p["url"])
        elif kind == "TCP_CONNECT_ATTEMPT" and p.get("address"):
            out["connected"].add(str(p["address"]))  # a SYN leaves for this address
        elif kind == "TCP_CONNECT" and p.get("address_list"):
            out["connected"].update(str(a) for a in p["address_list"])
        elif kind == "UDP_CONNECT" and p.get("address"):
            udp_addr[src] = str(p["address"])  # connect() on UDP sends nothing by itself
        elif kind in ("UDP_BYTES_SENT", "SOCKET_BYTES_SENT"):
            udp_sent.add(src)
    for src, addr in udp_addr.items():
        (out["connected"] if src in udp_sent else out["udp_probes"]).add(addr)
    return out


def is_loopback_address(addr: str) -> bool:
    host = addr.rsplit(":", 1)[0].strip("[]") if addr.count(":") == 1 or addr.startswith("[") else addr
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


# -----------------------------------------------------------------------------
# Checks

RAW_MATH = [
    (re.compile(r"\\\(|\\\)"), r"raw \( \) delimiters"),
    (re.compile(r"\\\[|\\\]"), r"raw \[ \] delimiters"),
    (re.compile(r"\$\$"), "raw $$ delimiters"),
    (re.compile(r"(?<![\w$])\$[^\s$][^$\n]{0,200}?[^\s$\\]\$(?![\w$])"), "raw $...$ math"),
    (re.compile(r"\\(frac|sqrt|dots|mathrm|operatorname|text)\b"), "raw LaTeX command"),
]


# -----------------------------------------------------------------------------
# Reader-facing rules, judged from the probe's measurements (JSON)

#: Injected as the first element of every served page's <head>. It records JavaScript errors from the
#: start (inline-script syntax errors included) and, after the page and MathJax finished, writes the
#: measurements into <script type="application/json" id="posym-probe">, which --dump-dom returns.
PROBE_ID = "posym-probe"
PROBE_JS = r"""
(function () {
  var errors = [];
  window.addEventListener('error', function (e) {
    var t = e.target;
    if (t && t !== window && (t.src || t.href)) { errors.push('failed to load ' + (t.src || t.href)); return; }
    errors.push(String(e.message || e.error || 'error') + (e.filename ? ' (' + e.filename.split('/').pop()
                + ':' + e.lineno + ')' : ''));
  }, true);
  window.addEventListener('unhandledrejection', function (e) { errors.push('unhandled rejection: ' + String(e.reason)); });
  var ce = console.error;
  console.error = function () {
    errors.push(Array.prototype.map.call(arguments, String).join(' '));
    return ce.apply(console, arguments);
  };
  var SKIP = {SCRIPT: 1, STYLE: 1, PRE: 1, CODE: 1, TEXTAREA: 1, NOSCRIPT: 1, TEMPLATE: 1, KBD: 1, SAMP: 1,
              'MJX-CONTAINER': 1, MATH: 1};
  function text(root) {
    var out = [], w = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {acceptNode: function (n) {
      for (var e = n.parentElement; e && e !== root.parentElement; e = e.parentElement)
        if (SKIP[e.tagName.toUpperCase()]) return NodeFilter.FILTER_REJECT;
      return NodeFilter.FILTER_ACCEPT; }});
    while (w.nextNode()) out.push(w.currentNode.nodeValue);
    return out.join('');
  }
  function scroller(el, stop) {
    for (var a = el.parentElement; a && a !== document.body; a = a.parentElement) {
      var o = getComputedStyle(a).overflowX;
      if (o === 'auto' || o === 'scroll') return a.tagName.toLowerCase() + (a.className ? '.' + String(a.className).trim().split(/\s+/).join('.') : '');
      if (a === stop) break;
    }
    return null;
  }
  function measure() {
    var art = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
    var m = {errors: errors, url: location.pathname, viewport: window.innerWidth, images: [], tables: [],
             text: text(art)};
    art.querySelectorAll('img').forEach(function (img) {
      var fig = img.closest('figure'), cap = fig ? fig.querySelector('figcaption') : null;
      var num = cap ? cap.querySelector('.caption-number') : null;
      var sec = img.closest('section'), h = sec ? sec.querySelector('h1, h2, h3, h4') : null;
      m.images.push({src: (img.getAttribute('src') || '').slice(0, 120),
                     section: h ? h.textContent.replace(/#$/, '').trim().slice(0, 80) : '',
                     output: !!img.closest('.cell_output, .output'),
                     figure: !!fig, caption: cap ? cap.textContent.trim().slice(0, 200) : null,
                     number: num ? num.textContent.trim() : null,
                     width: img.getBoundingClientRect().width, natural_width: img.naturalWidth});
    });
    art.querySelectorAll('table').forEach(function (t, i) {
      var box = t.parentElement, r = t.getBoundingClientRect();
      var cells = [];
      t.querySelectorAll('td, th').forEach(function (c) {
        var s = c.textContent.trim();
        if (s === 'nan' || s === 'NaN' || s === 'None') cells.push(s);
      });
      var head = Array.prototype.map.call(t.querySelectorAll('thead th, tr:first-child th'), function (c) {
        return c.textContent.trim(); }).filter(function (s) { return s; }).slice(0, 6);
      var sec = t.closest('section'), h = sec ? sec.querySelector('h1, h2, h3, h4') : null;
      m.tables.push({index: i, scroll_width: Math.max(t.scrollWidth, Math.ceil(r.width)),
                     client_width: box ? box.clientWidth : window.innerWidth,
                     scroller: scroller(t, art), columns: head, nan_cells: cells,
                     section: h ? h.textContent.replace(/#$/, '').trim().slice(0, 80) : ''});
    });
    var el = document.createElement('script');
    el.type = 'application/json'; el.id = 'PROBE_ID';
    el.textContent = JSON.stringify(m).replace(/</g, '\\u003c');
    document.body.appendChild(el);
  }
  window.addEventListener('load', function () {
    var p = (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
    p.then(function () { setTimeout(measure, 100); }, function () { setTimeout(measure, 100); });
  });
})();
""".replace("PROBE_ID", PROBE_ID)

RAW_SOURCE = [
    (re.compile(r"\{math\}"), "raw {math} role"),
    (re.compile(r"\{glue"), "raw {glue} placeholder"),
    (re.compile(r"\$\$"), "raw $$"),
]
MISSING_CELLS = {"nan", "NaN", "None"}


def inject_probe(page: bytes) -> bytes:
    """The page with the probe script as the first element of <head>."""
    tag = f"<script>{PROBE_JS}</script>".encode()
    m = re.search(rb"<head[^>]*>", page, re.I)
    return page[:m.end()] + tag + page[m.end():] if m else tag + page


def extract_measurements(dom: str) -> dict | None:
    """The probe's JSON from a DOM dump (None when the probe never ran)."""
    m = re.search(rf'<script type="application/json" id="{PROBE_ID}">(.*?)</script>', dom, re.S)
    if not m:
        return None
    return json.loads(html.unescape(m.group(1)))


def _where(d: dict) -> str:
    return f" in section {d['section']!r}" if d.get("section") else ""


def figure_problems(rel: str, images: list[dict]) -> list[str]:
    """A notebook-output image must sit in a <figure> whose <figcaption> carries a number."""
    out = []
    for k, img in enumerate(images, 1):
        if not img.get("output"):
            continue
        if not img.get("figure") or img.get("caption") is None:
            out.append(f"{rel}: figure without a caption (output image {k}{_where(img)})")
        elif not img.get("number"):
            out.append(f"{rel}: figure without a number (output image {k}{_where(img)}: "
                       f"{img.get('caption', '')[:60]!r})")
    return out


def _table_name(t: dict) -> str:
    cols = ", ".join(t.get("columns") or [])
    return f"table {t.get('index', 0) + 1}{_where(t)}" + (f" (columns {cols})" if cols else "")


def table_problems(rel: str, tables: list[dict]) -> list[str]:
    """A table wider than its box must have an ancestor that scrolls horizontally; no nan/None cell."""
    out = []
    for t in tables:
        if t["scroll_width"] > t["client_width"] + 1 and not t.get("scroller"):
            out.append(f"{rel}: {_table_name(t)} is cut off at the right "
                       f"({t['scroll_width']} px wide in a {t['client_width']} px box that does not scroll)")
        bad = [c for c in t.get("nan_cells", []) if c in MISSING_CELLS]
        if bad:
            kinds = ", ".join(sorted(set(bad)))
            out.append(f"{rel}: {_table_name(t)} has {len(bad)} cell(s) reading {kinds} (show missing values as '–')")
    return out


def console_problems(rel: str, errors: list[str]) -> list[str]:
    return [f"{rel}: JavaScript error: {e[:300]}" for e in errors]


def raw_text_problems(rel: str, text: str) -> list[str]:
    out = []
    for rx, what in RAW_SOURCE:
        found = list(rx.finditer(text))
        if found:
            m = found[0]
            ctx = text[max(0, m.start() - 40): m.end() + 40].replace("\n", " ")
            out.append(f"{rel}: {what} visible on the page ({len(found)}x), e.g. ...{ctx}...")
    return out


def judge_measurements(rel: str, m: dict | None) -> list[str]:
    """Every reader-facing rule on one page's measurements (the probe's JSON)."""
    if m is None:
        return [f"{rel}: the page probe did not report (the page never finished loading)"]
    return (console_problems(rel, m.get("errors", [])) + figure_problems(rel, m.get("images", []))
            + table_problems(rel, m.get("tables", [])) + raw_text_problems(rel, m.get("text", "")))



LAUNCH_RX = re.compile(r"^https://colab\.research\.google\.com/github/([^/]+)/([^/]+)/blob/([^/]+)/(.+)$")


def repository_url(root: Path = ROOT) -> str:
    import yaml

    cfg = yaml.safe_load((root / "_config.yml").read_text()) or {}
    return str((cfg.get("repository") or {}).get("url", "")).rstrip("/")


def launch_link_problems(rel: str, anchors: list[str], root: Path = ROOT, repo: str | None = None) -> list[str]:
    """Every Colab launch link must open a file of this repository (``repo``, from _config.yml) that exists."""
    repo = repo if repo is not None else repository_url(root)
    out = []
    for a in anchors:
        m = LAUNCH_RX.match(a)
        if not m:
            continue
        org, name, _branch, path = m.groups()
        if repo and f"https://github.com/{org}/{name}" != repo:
            out.append(f"{rel}: launch link {a} is not in the repository {repo}")
        if not (root / unquote(path)).is_file():
            out.append(f"{rel}: launch link {a} opens {unquote(path)}, which is not in the repository "
                       f"(run `make notebooks`)")
    return out


def missing_launch_buttons(pages: dict[str, PageParser], chapters: set[str]) -> list[str]:
    """Every built chapter page (``book/<stem>.html`` with ``stem`` in ``chapters``) must carry a launch link that
    opens its own notebook, ``notebooks/<stem>.ipynb``."""
    out = []
    for rel, p in sorted(pages.items()):
        stem = Path(rel).stem
        if not rel.startswith("book/") or stem not in chapters:
            continue
        links = [a for a in p.anchors if LAUNCH_RX.match(a)]
        if not any(re.search(rf"/notebooks/{re.escape(stem)}\.ipynb$", a) for a in links):
            out.append(f"{rel}: no launch button opens notebooks/{stem}.ipynb (found {links or 'none'})")
    return out


def static_check(html_dir: Path, root: Path = ROOT) -> tuple[list[str], dict[str, PageParser], int]:
    problems, pages = [], {}
    n_anchor_external = 0
    for path in sorted(html_dir.rglob("*.html")):
        rel = path.relative_to(html_dir).as_posix()
        if rel.startswith(("_static/", "_sources/", "_images/")):
            continue  # theme templates and copied sources, not pages
        p = parse(path.read_text(encoding="utf-8", errors="replace"))
        pages[rel] = p
        for where, url in p.resources:
            if is_external(url):
                problems.append(f"{rel}: {where} loads an external URL: {url}")
            elif not urlsplit(url).scheme:
                target = (path.parent / unquote(urlsplit(url).path)).resolve()
                if urlsplit(url).path and not target.exists():
                    problems.append(f"{rel}: {where} points at a missing file: {url}")
        n_anchor_external += sum(is_external(a) for a in p.anchors)
        problems.extend(launch_link_problems(rel, p.anchors))
    for css in sorted(html_dir.rglob("*.css")):
        text = css.read_text(encoding="utf-8", errors="replace")
        for m in re.finditer(r"(@import\s+(?:url\()?|url\()\s*['\"]?([^'\")\s]+)", text):
            if is_external(m.group(2)):
                problems.append(f"{css.relative_to(html_dir)}: loads an external URL: {m.group(2)}")
    chapters = {q.stem for q in (root / "notebooks").glob("*.ipynb")}
    problems.extend(missing_launch_buttons(pages, chapters))
    return problems, pages, n_anchor_external


def check_page(rel: str, source: PageParser, dom: str, net: dict[str, set[str]], served: set[str]) -> tuple[list[str], str]:
    problems = []
    d = parse(dom)
    if not dom.strip() or d.tags.get("html", 0) == 0:
        return [f"{rel}: empty DOM (page did not load)"], "no DOM"
    if not d.title.strip():
        problems.append(f"{rel}: page has no title")
    if d.tags.get("main", 0) == 0 and d.tags.get("article", 0) == 0:
        problems.append(f"{rel}: no <main>/<article> content")
    n_math_src = source.classes.get("math", 0)
    n_mjx = d.tags.get("mjx-container", 0)
    if n_math_src:
        if n_mjx < n_math_src:
            problems.append(f"{rel}: MathJax typeset {n_mjx} of {n_math_src} math elements")
        for rx, what in RAW_MATH:
            m = rx.search(d.text)
            if m:
                ctx = d.text[max(0, m.start() - 40): m.end() + 40].replace("\n", " ")
                problems.append(f"{rel}: {what} left in the rendered text: ...{ctx}...")
    n_proof = source.classes.get("proof", 0)
    if n_proof and d.classes.get("proof", 0) < n_proof:
        problems.append(f"{rel}: {n_proof} proof/definition blocks in the source, {d.classes.get('proof', 0)} rendered")
    n_img = source.tags.get("img", 0)
    if d.tags.get("img", 0) < n_img:
        problems.append(f"{rel}: {n_img} images in the source, {d.tags.get('img', 0)} in the DOM")
    for where, url in d.resources:
        if where.startswith("img") and not urlsplit(url).scheme:
            full = (Path("/" + rel).parent / unquote(urlsplit(url).path)).as_posix()
            full = os.path.normpath(full)
            if full not in served:
                problems.append(f"{rel}: image {url} was not fetched from the local server")
    external = sorted(u for u in net["page"] if is_external(u))
    if external:
        problems.append(f"{rel}: the page requested other hosts: {', '.join(external[:8])}")
    remote = sorted(a for a in net["connected"] if not is_loopback_address(a))
    if remote:
        problems.append(f"{rel}: the browser connected to non-local addresses: {', '.join(remote[:8])}")
    summary = (f"math {n_mjx}/{n_math_src}, proofs {d.classes.get('proof', 0)}, images {d.tags.get('img', 0)}, "
               f"{len(net['page'])} page requests" + ("" if external else ", all local")
               + ("" if remote else "; packets only to loopback"))
    return problems, summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("html_dir", nargs="?", type=Path, default=ROOT / "_build" / "html")
    ap.add_argument("--budget-ms", type=int, default=20000, help="chromium virtual time budget per page")
    ap.add_argument("--timeout", type=int, default=120, help="seconds before a page load is abandoned")
    ap.add_argument("--keep", type=Path, help="keep DOM dumps and net logs in this folder")
    ap.add_argument("--report", action="store_true",
                    help="print every failure, grouped by page, and exit 0 (the default is strict: exit 1)")
    args = ap.parse_args(argv)
    html_dir = args.html_dir.resolve()
    if not (html_dir / "index.html").is_file():
        raise SystemExit(f"error: {html_dir}/index.html not found; build the book first (`make html`)")
    t0 = time.perf_counter()

    problems, pages, n_links = static_check(html_dir)
    print(f"[browser] static check: {len(pages)} pages; every loaded resource is local; "
          f"{n_links} outgoing <a> links (navigation only)" if not problems else
          f"[browser] static check found {len(problems)} problem(s)")

    chromium = find_chromium()
    version = subprocess.run([chromium, "--version"], capture_output=True, text=True).stdout.strip()
    handler = functools.partial(QuietHandler, directory=str(html_dir))
    QuietHandler.log = []
    server = Server(("127.0.0.1", 0), handler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    workdir = Path(tempfile.mkdtemp(prefix="posym-browser-"))
    try:
        print(f"[browser] {version}; serving {html_dir} on http://127.0.0.1:{port}/")
        targets = list(pages)
        background: set[str] = set()
        for rel in targets:
            before = len(QuietHandler.log)
            url = f"http://127.0.0.1:{port}/{rel}"
            try:
                dom, netlog, _ = chromium_dump(chromium, url, workdir, args.budget_ms, args.timeout)
            except RuntimeError as e:
                problems.append(f"{rel}: {e}")
                print(f"  FAIL {rel}: {e}")
                continue
            served = {os.path.normpath(unquote(urlsplit(p).path)) for p, code in QuietHandler.log[before:]
                      if 200 <= code < 400}
            net = netlog_analysis(netlog)
            background |= {urlsplit(u).hostname or u for u in net["background"] if is_external(u)}
            page_problems, summary = check_page(rel, pages[rel], dom, net, served)
            page_problems += judge_measurements(rel, extract_measurements(dom))
            missing = [p for p, code in QuietHandler.log[before:] if code >= 400 and p != "/favicon.ico"]
            if missing:
                page_problems.append(f"{rel}: the local server answered 404 for {', '.join(sorted(set(missing))[:6])}")
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                (args.keep / (rel.replace("/", "__") + ".dom.html")).write_text(dom)
                shutil.copy2(netlog, args.keep / (rel.replace("/", "__") + ".netlog.json"))
            print(f"  {'ok  ' if not page_problems else 'FAIL'} {rel}: {summary}")
            problems.extend(page_problems)
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(workdir, ignore_errors=True)

    if problems:
        by_page: dict[str, list[str]] = {}
        for p in problems:
            by_page.setdefault(p.split(": ", 1)[0], []).append(p.split(": ", 1)[-1])
        out = sys.stdout if args.report else sys.stderr
        print(f"[browser] {len(problems)} problem(s) on {len(by_page)} page(s):", file=out)
        for page, items in by_page.items():
            print(f"  {page}: {len(items)}", file=out)
            for item in items:
                print(f"    - {item}", file=out)
        if args.report:
            print("[browser] report mode: not failing (the default run fails on any of these)")
            return 0
        return 1
    if background:
        print(f"[browser] chromium's own background requests (not the pages'), all blocked by the host "
              f"resolver rules: {', '.join(sorted(background))}")
    print(f"[browser] all {len(targets)} pages rendered offline with math, proofs and figures "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
