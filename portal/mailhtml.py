"""A message's HTML part as its own sandboxed document (docs/security.md, "HTML mail").

The message page never puts mail HTML into our own document.  It shows an
``<iframe sandbox>`` (no ``allow-scripts``, no ``allow-same-origin``: the
frame's document runs nothing and has an origin of its own) whose ``src`` is
``/mail/<id>/html``: the part cleaned with nh3 and wrapped in a small page of
its own, answered under :func:`frame_csp`.  Three layers, each enough alone
against a script: nh3 drops scripts and handlers, the frame's CSP allows no
script source and repeats the sandbox (so the document stays sandboxed even
opened in a tab of its own), and the iframe's ``sandbox`` attribute.

Remote images are the one thing cleaning keeps but the policy blocks:
``img-src data:`` until the reader asks, then ``https: http:`` for that one
request (``?images=1``); nothing remembers the choice.
"""

from __future__ import annotations

import nh3
from markupsafe import Markup

# nh3's tags (and mail's old <font>) minus those that fetch media by themselves; img
# stays: the frame's CSP decides whether it loads.
_TAGS = (nh3.ALLOWED_TAGS | {"font"}) - {"picture", "source", "video", "audio", "track", "map",
                                         "area"}
# Mail lays itself out with inline styles and the old table attributes.
_ATTRIBUTES = {
    **nh3.ALLOWED_ATTRIBUTES,
    "*": {"style", "dir", "title", "lang"},
    "table": nh3.ALLOWED_ATTRIBUTES["table"] | {"width", "cellpadding", "cellspacing",
                                                 "border", "bgcolor"},
    "td": nh3.ALLOWED_ATTRIBUTES["td"] | {"width", "valign", "bgcolor"},
    "th": nh3.ALLOWED_ATTRIBUTES["th"] | {"width", "valign", "bgcolor"},
    "font": {"color", "face", "size"},
}
# CSS properties kept in a style attribute: layout, type and colour; nothing with a URL
# (background-image, list-style-image...) and nothing that positions over the page.
_STYLE_PROPERTIES = {
    "color", "background-color", "font", "font-family", "font-size", "font-style",
    "font-weight", "line-height", "text-align", "text-decoration", "text-transform",
    "letter-spacing", "white-space", "vertical-align", "width", "max-width", "min-width",
    "height", "max-height", "min-height", "margin", "margin-top", "margin-right",
    "margin-bottom", "margin-left", "padding", "padding-top", "padding-right",
    "padding-bottom", "padding-left", "border", "border-top", "border-right",
    "border-bottom", "border-left", "border-color", "border-style", "border-width",
    "border-collapse", "border-spacing", "border-radius", "display",
}
# data: only as an image's source (an inline image); a data: link could open a page of
# the sender's making, so links keep to the web and mail.
_URL_SCHEMES = {"http", "https", "mailto", "data"}
_REMOTE = ("http://", "https://", "//")

# The iframe's flags: links may open a normal tab (target=_blank), nothing else.
SANDBOX = "allow-popups allow-popups-to-escape-sandbox"
_FRAME_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; img-src {images}; "
                 "form-action 'none'; base-uri 'none'; frame-ancestors 'self'; "
                 f"sandbox {SANDBOX}")
# Our frame's own look: a readable body font, the mail's width kept to the frame.
_FRAME_STYLE = ("body{margin:0;padding:1rem;background:#fff;color:#1d2330;"
                "font:16px/1.6 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;"
                "overflow-wrap:anywhere}img,table{max-width:100%}img{height:auto}"
                "pre{white-space:pre-wrap}a{color:#2350b8}")


def frame_csp(remote_images: bool) -> str:
    """The frame's policy: no script at all; images inline only, or remote ones too."""
    return _FRAME_POLICY.format(images="data: https: http:" if remote_images else "data:")


def clean(html: str) -> tuple[Markup, bool]:
    """Mail HTML cleaned for the frame, and whether it names remote images."""
    remote = False

    def check_urls(tag: str, attribute: str, value: str) -> str | None:
        nonlocal remote
        url = value.strip().lower()
        if tag == "img" and attribute == "src":
            remote = remote or url.startswith(_REMOTE)
        elif url.startswith("data:"):
            return None
        return value

    cleaned = nh3.clean(html, tags=_TAGS, attributes=_ATTRIBUTES, attribute_filter=check_urls,
                        filter_style_properties=_STYLE_PROPERTIES, url_schemes=_URL_SCHEMES,
                        link_rel="noopener noreferrer nofollow",
                        set_tag_attribute_values={"a": {"target": "_blank"}})
    return Markup(cleaned), remote


def frame_document(body: Markup) -> str:
    """The frame's whole page around an already cleaned body."""
    return ('<!doctype html><html><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Message</title><style>{_FRAME_STYLE}</style></head>"
            f"<body>{body}</body></html>")
