"""The status page's inline style and script, and the Content-Security-Policy that admits them.

Nothing is loaded from elsewhere: a page an operator opens at 3 a.m. must not wait on a CDN.
The policy admits this one script by its hash and nothing else, so even a string that slipped
past escaping could not run.
"""

from __future__ import annotations

import base64
import hashlib

STYLE = """
:root{--bg:#f4f6f9;--fg:#18202e;--muted:#586174;--card:#fff;--line:#dbe0e8;--link:#1a56b8;
--down:#a61b12;--down-bg:#fde6e4;--stuck:#8f4300;--stuck-bg:#ffeed8;--low:#6b5200;
--low-bg:#fff4c2;--up:#17633a;--up-bg:#e0f3e7;--wait:#454f60;--wait-bg:#e9edf2}
@media (prefers-color-scheme:dark){:root{--bg:#12161d;--fg:#e6e9ee;--muted:#9aa4b5;
--card:#1b212b;--line:#2e3644;--link:#8ab4ff;--down:#ffb4ab;--down-bg:#5c1510;
--stuck:#ffc38a;--stuck-bg:#4d2a00;--low:#f2d36b;--low-bg:#433600;--up:#8fdcaa;
--up-bg:#143a24;--wait:#c3cad6;--wait-bg:#2b3240}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
a{color:var(--link)}
header{display:flex;flex-wrap:wrap;gap:4px 16px;align-items:baseline;padding:10px 16px;
background:var(--card);border-bottom:1px solid var(--line)}
header h1{font-size:18px;margin:0}
main{max-width:1500px;margin:0 auto;padding:4px 16px 24px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;
padding:10px 14px;margin:12px 0}
h2{font-size:16px;margin:2px 0 8px}
.muted{color:var(--muted)}
.note{background:var(--low-bg);color:var(--low);padding:6px 10px;border-radius:6px}
.summary{display:flex;flex-wrap:wrap;gap:8px;margin:0;padding:0;list-style:none}
.summary a{display:block;padding:4px 10px;border:1px solid var(--line);border-radius:6px;
text-decoration:none;color:var(--fg)}
.summary b{font-size:16px}
form{display:flex;flex-wrap:wrap;gap:8px 14px;align-items:end}
label{display:flex;flex-direction:column;font-size:12px;color:var(--muted)}
input,select,button{font:inherit;padding:4px 6px;border:1px solid var(--line);border-radius:5px;
background:var(--card);color:var(--fg)}
.scroll{overflow-x:auto}
table{width:100%;border-collapse:collapse}
th,td{text-align:left;vertical-align:top;padding:6px 8px;border-bottom:1px solid var(--line)}
th{font-size:12px;color:var(--muted);font-weight:600;white-space:nowrap}
td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
code{font:13px/1.4 ui-monospace,"DejaVu Sans Mono",monospace}
.txid{overflow-wrap:anywhere;word-break:normal;user-select:all}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:700;
white-space:nowrap;font-size:12px}
.down{color:var(--down);background:var(--down-bg)}
.stuck{color:var(--stuck);background:var(--stuck-bg)}
.low{color:var(--low);background:var(--low-bg)}
.up{color:var(--up);background:var(--up-bg)}
.waiting,.in-flight{color:var(--wait);background:var(--wait-bg)}
tr.row-down td:first-child{box-shadow:inset 4px 0 var(--down)}
tr.row-stuck td:first-child{box-shadow:inset 4px 0 var(--stuck)}
tr.row-low td:first-child{box-shadow:inset 4px 0 var(--low)}
td.who{min-width:11em;overflow-wrap:anywhere}
.balances{margin:0;padding:0;list-style:none}
.balances li{white-space:nowrap}
.error{color:var(--down)}
.pager{display:flex;flex-wrap:wrap;gap:10px;align-items:center;margin:8px 0}
button.copy{font-size:11px;padding:0 6px;margin-left:4px;cursor:pointer}
@media (max-width:760px){
table.rows thead{display:none}
table.rows tr{display:block;border-bottom:1px solid var(--line);padding:6px 0}
table.rows td{display:block;border:0;padding:2px 4px}
table.rows td[data-label]::before{content:attr(data-label) ": ";color:var(--muted);font-size:12px}
}
"""

SCRIPT = """(function () {
  function pick(node) {
    var range = document.createRange();
    range.selectNodeContents(node);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }
  document.querySelectorAll("button.copy").forEach(function (button) {
    var code = button.parentNode.querySelector("code");
    button.hidden = false;
    button.addEventListener("click", function () {
      function done() {
        button.textContent = "Copied";
        setTimeout(function () { button.textContent = "Copy"; }, 1500);
      }
      pick(code);
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(code.textContent).then(done, function () {});
      } else if (document.execCommand("copy")) {
        done();
      }
    });
  });
})();"""
"""Copy buttons for txids: shown only where the script runs; without it a click on a txid
selects the whole of it (``user-select:all``)."""


def _digest(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


CSP = (
    "default-src 'none'; "
    f"style-src 'sha256-{_digest(STYLE)}'; "
    f"script-src 'sha256-{_digest(SCRIPT)}'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
"""The page's Content-Security-Policy: its own style and script, forms to itself, no frames."""

HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",  # balances and txids are not for shared caches
    "Referrer-Policy": "no-referrer",  # a filter in the URL says nothing to a linked site
    "X-Content-Type-Options": "nosniff",
}
"""The page's response headers."""
