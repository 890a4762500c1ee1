"""The daily digest: one e-mail per customer listing the hits that were new on a run date.

Run by the daily DAG after ``load_hits`` (or ``send_digests(engine, run_date, settings)`` by hand).
With ``settings.smtp_host`` set the mail goes to that relay; otherwise it is written to
``<outbox>/<run_date>/<customer_id>.eml``. A ``digests`` row per (customer, run date) makes sure
a digest is never sent twice, and customers with ``digest_opt_out`` get none.

The message is deterministic: its Date comes from the run date, its Message-ID from customer and
run date, and its MIME boundaries from a hash of its content, so rebuilding a digest gives the same
bytes. Page titles and URLs are web text an attacker controls: they are bounded, stripped of
control characters, escaped by Jinja's HTML autoescape, and only http(s) URLs become links.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import email.utils
import hashlib
import io
import smtplib
import ssl
from collections import defaultdict
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import urlencode, urlsplit

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy import Connection, Engine, and_, exists, select

from copyhunt.blobs import LocalBlobStore
from copyhunt.config import Settings
from copyhunt.hitsdb.models import Customer, Digest, Hit
from copyhunt.hitsdb.store import bound_text, check_customer_id, dialect_insert
from copyhunt.hitsdb.workflow import AUTHORISED
from copyhunt.lake import atomic_write_bytes

__all__ = [
    "DigestResult",
    "build_digest_message",
    "format_money",
    "inbox_link",
    "make_thumbnail",
    "safe_href",
    "send_digests",
]

TOP_N = 10  # hits listed in the mail; the inbox has the rest
THUMB_MAX_PX = 160
THUMB_QUALITY = 80
# Display bounds for web text inside the mail (the database keeps up to 2000 characters).
TITLE_SHOWN = 120
URL_SHOWN = 300
NAME_SHOWN = 80
TEMPLATES = Path(__file__).parent / "templates"
_CURRENCY_SIGNS = {"EUR": "€", "USD": "$", "GBP": "£"}


@dataclass(frozen=True)
class DigestResult:
    """One digest sent by this call. ``path`` is the .eml file when ``sent_via == 'outbox'``."""

    customer_id: str
    run_date: dt.date
    sent_via: str  # 'smtp' | 'outbox'
    message_id: str
    path: Path | None
    hit_count: int


def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        # Escape everything in the HTML template; the text template is plain text.
        autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def format_money(cents: int, currency: str = "EUR") -> str:
    """``123456, 'EUR'`` -> ``'€1,234.56'``; integer arithmetic only, money is never a float."""
    units, rest = divmod(abs(int(cents)), 100)
    sign = "-" if cents < 0 else ""
    symbol = _CURRENCY_SIGNS.get(currency.upper())
    amount = f"{units:,}.{rest:02d}"
    return f"{sign}{symbol}{amount}" if symbol else f"{sign}{amount} {currency.upper()}"


def _shorten(text: str | None, limit: int) -> str:
    text = bound_text(text, 10 * limit) or ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def safe_href(url: str | None) -> str | None:
    """Only http(s) URLs become links: a ``javascript:`` URL survives HTML escaping untouched."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return url if parts.scheme.lower() in ("http", "https") and parts.netloc else None


def inbox_link(settings: Settings, path: str = "/", **query: str) -> str:
    """An absolute link into the customer inbox (``copyhunt serve``) at ``settings.inbox_url``."""
    link = settings.inbox_url.rstrip("/") + path
    return f"{link}?{urlencode(query)}" if query else link


def make_thumbnail(data: bytes, max_px: int = THUMB_MAX_PX, max_pixels: int = 64_000_000) -> bytes | None:
    """A JPEG thumbnail at most ``max_px`` on its longer side, or None if the image cannot be read.

    ``max_pixels`` refuses decompression bombs before decoding (the crawler's blobs are web data).
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > max_pixels:
                return None
            im.draft("RGB", (max_px, max_px))  # JPEG: decode at reduced size, much cheaper
            thumb = ImageOps.exif_transpose(im)
            thumb.thumbnail((max_px, max_px))
            if thumb.mode in ("RGBA", "LA", "P", "PA"):
                rgba = thumb.convert("RGBA")
                thumb = Image.new("RGB", rgba.size, (255, 255, 255))
                thumb.paste(rgba, mask=rgba.getchannel("A"))  # transparency on white, like a page
            elif thumb.mode not in ("RGB", "L"):
                thumb = thumb.convert("RGB")
            out = io.BytesIO()
            thumb.save(out, "JPEG", quality=THUMB_QUALITY, optimize=True)
            return out.getvalue()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _mail_domain(settings: Settings) -> str:
    addr = email.utils.parseaddr(settings.mail_from)[1]
    domain = addr.rpartition("@")[2]
    return domain if domain and all(c.isalnum() or c in ".-" for c in domain) else "copyhunt.invalid"


def message_id_for(customer_id: str, run_date: dt.date, settings: Settings) -> str:
    return f"<digest.{run_date:%Y%m%d}.{customer_id}@{_mail_domain(settings)}>"


def _recipient(name: str, addr: str) -> Address | str:
    try:
        return Address(display_name=_shorten(name, NAME_SHOWN), addr_spec=addr)
    except (ValueError, IndexError):
        return addr  # the header policy still refuses line breaks in it


def _top_hits(hits: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The TOP_N hits to list: claimable before licensed, then by value, score, and id (stable)."""
    ranked = sorted(
        hits,
        key=lambda h: (bool(h["licensed"]), -int(h["license_value_cents"]), -float(h["score"]), h["id"]),
    )
    return ranked[:TOP_N]


def _context(customer: Mapping[str, Any], hits: Sequence[Mapping[str, Any]], run_date: dt.date,
             settings: Settings, thumbs: Mapping[str, str]) -> dict[str, Any]:
    claimable: dict[str, int] = defaultdict(int)
    for hit in hits:
        if not hit["licensed"]:
            claimable[hit["currency"]] += int(hit["license_value_cents"])
    top = []
    for hit in _top_hits(hits):
        top.append(
            {
                "title": _shorten(hit["page_title"], TITLE_SHOWN),
                "page_url": _shorten(hit["page_url"], URL_SHOWN),
                "href": safe_href(hit["page_url"]),
                "domain": _shorten(hit["domain"], NAME_SHOWN) or "?",
                "operator": _shorten(hit["operator_name"], NAME_SHOWN),
                "score": f"{float(hit['score']):.2f}",
                "value": format_money(int(hit["license_value_cents"]), hit["currency"]),
                "licensed": bool(hit["licensed"]),
                "thumb_cid": thumbs.get(hit["image_sha256"] or ""),
                "inbox_href": inbox_link(settings, f"/hits/{int(hit['id'])}"),
            }
        )
    currencies = sorted(claimable, key=lambda c: (c != "EUR", c))
    return {
        "customer_name": _shorten(customer["name"], NAME_SHOWN),
        "run_date": run_date.isoformat(),
        "new_count": len(hits),
        "licensed_count": sum(1 for h in hits if h["licensed"]),
        "claimable": [format_money(claimable[c], c) for c in currencies] or [format_money(0, "EUR")],
        "top": top,
        "more_count": max(0, len(hits) - TOP_N),
        # The inbox opens on this run's new hits; the settings page is where the digest is turned off.
        "inbox_url": inbox_link(settings, "/hits", since=run_date.isoformat(), sort="value"),
        "settings_url": inbox_link(settings, "/settings"),
    }


def build_digest_message(
    customer: Mapping[str, Any],
    hits: Sequence[Mapping[str, Any]],
    run_date: dt.date,
    settings: Settings,
    blob_root: Path | None = None,
) -> EmailMessage:
    """The digest e-mail for one customer's new hits (rows as returned by hits_for_customer).

    multipart/alternative: text/plain, then multipart/related (text/html + inline JPEG thumbnails
    of the found images, when ``blob_root`` holds them). Same inputs, same bytes.
    """
    customer_id = check_customer_id(customer["id"])
    ranked_top = _top_hits(hits)

    # Thumbnails: one related part per distinct image, named by its content hash.
    thumbs: dict[str, str] = {}
    thumb_data: list[tuple[str, bytes]] = []
    if blob_root is not None:
        store = LocalBlobStore(blob_root)
        for hit in ranked_top:
            sha = hit.get("image_sha256")
            if not sha or sha in thumbs:
                continue
            try:
                if not store.exists(sha):
                    continue
                jpeg = make_thumbnail(store.get(sha), max_pixels=settings.max_image_pixels)
            except (ValueError, KeyError, OSError):
                continue
            if jpeg is not None:
                cid = f"thumb-{sha[:24]}@copyhunt"
                thumbs[sha] = cid
                thumb_data.append((cid, jpeg))

    ctx = _context(customer, hits, run_date, settings, thumbs)
    env = _environment()
    text = env.get_template("digest.txt.j2").render(ctx)
    html = env.get_template("digest.html.j2").render(ctx)

    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = settings.mail_from
    msg["To"] = _recipient(customer["name"], customer["email"])
    n = len(hits)
    msg["Subject"] = f"copyhunt: {n} new use{'s' if n != 1 else ''} of your images found on {run_date.isoformat()}"
    # Derived from the run date, not the clock, so that a rebuilt digest is byte-identical.
    msg["Date"] = email.utils.format_datetime(dt.datetime.combine(run_date, dt.time.min, tzinfo=dt.timezone.utc))
    msg["Message-ID"] = message_id_for(customer_id, run_date, settings)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies, please
    msg["X-Copyhunt-Run-Date"] = run_date.isoformat()
    # Quoted-printable always: web text may hold long lines or lines that look like MIME syntax.
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    if thumb_data:
        html_part = msg.get_payload()[1]
        for cid, jpeg in thumb_data:
            html_part.add_related(jpeg, "image", "jpeg", cid=f"<{cid}>", disposition="inline",
                                  filename=f"{cid.split('@')[0]}.jpg")

    # The email package picks random boundaries; derive them from the content instead. A hash of the
    # content cannot occur in that content, so web text cannot forge a boundary either.
    content_hash = hashlib.sha256()
    for piece in (text, html, msg["Message-ID"]):
        content_hash.update(piece.encode("utf-8"))
    for _cid, jpeg in thumb_data:
        content_hash.update(jpeg)
    digest_hex = content_hash.hexdigest()[:40]
    for i, part in enumerate(p for p in msg.walk() if p.is_multipart()):
        part.set_boundary(f"copyhunt-{i}-{digest_hex}")
    return msg


def _due_customers(conn: Connection, run_date: dt.date) -> list[dict[str, Any]]:
    """Customers with hits first seen on run_date, not opted out, and no digest for that date yet."""
    ct, ht, dgt = Customer.__table__, Hit.__table__, Digest.__table__
    has_new = exists().where(and_(ht.c.customer_id == ct.c.id, ht.c.first_seen == run_date, ht.c.status != AUTHORISED))
    already = exists().where(and_(dgt.c.customer_id == ct.c.id, dgt.c.run_date == run_date))
    query = (
        select(ct.c.id, ct.c.name, ct.c.email)
        .where(has_new, ct.c.digest_opt_out.is_(False), ~already)
        .order_by(ct.c.id)
    )
    return [dict(r) for r in conn.execute(query).mappings()]


def _new_hits(conn: Connection, customer_id: str, run_date: dt.date) -> list[dict[str, Any]]:
    ht = Hit.__table__
    # A use on the customer's own site is not news to them (copyhunt.coverage).
    query = select(ht).where(ht.c.customer_id == customer_id, ht.c.first_seen == run_date,
                             ht.c.status != AUTHORISED).order_by(ht.c.id)
    return [dict(r) for r in conn.execute(query).mappings()]


class _Smtp:
    """One SMTP connection, opened on the first message and reused for the rest."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.conn: smtplib.SMTP | None = None

    def send(self, sender: str, recipient: str, data: bytes) -> None:
        if self.conn is None:
            s = self.settings
            conn = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=60)
            try:
                if s.smtp_starttls:
                    conn.starttls(context=ssl.create_default_context())
                if s.smtp_user:
                    conn.login(s.smtp_user, s.smtp_password)
            except BaseException:
                conn.close()
                raise
            self.conn = conn
        self.conn.sendmail(sender, [recipient], data)

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.quit()
            except smtplib.SMTPException:
                self.conn.close()
            self.conn = None


def send_digests(
    engine: Engine,
    run_date: dt.date,
    settings: Settings,
    blob_root: Path | None = None,
) -> list[DigestResult]:
    """Send (or write to the outbox) each due customer's digest for run_date; return what was sent.

    Each digest is claimed by inserting its ``digests`` row in a transaction that commits only
    after the mail was handed over: a failed send leaves no row (the retry sends it), and a
    concurrent sender waits on the row's primary key and then skips it.
    """
    with engine.connect() as conn:
        due = _due_customers(conn, run_date)
    use_smtp = bool(settings.smtp_host)
    sender = email.utils.parseaddr(settings.mail_from)[1] or settings.mail_from
    smtp = _Smtp(settings)
    results: list[DigestResult] = []
    dgt = Digest.__table__
    try:
        for customer in due:
            cid = check_customer_id(customer["id"])
            with engine.begin() as conn:
                hits = _new_hits(conn, cid, run_date)
                if not hits:
                    continue
                msg = build_digest_message(customer, hits, run_date, settings, blob_root)
                data = msg.as_bytes()
                path = None if use_smtp else settings.outbox / run_date.isoformat() / f"{cid}.eml"
                claim = (
                    dialect_insert(conn)(dgt)
                    .values(
                        customer_id=cid,
                        run_date=run_date,
                        sent_via="smtp" if use_smtp else "outbox",
                        message_id=msg["Message-ID"],
                        path=str(path) if path else None,
                        hit_count=len(hits),
                    )
                    .on_conflict_do_nothing(index_elements=["customer_id", "run_date"])
                    .returning(dgt.c.customer_id)
                )
                if conn.execute(claim).first() is None:
                    continue  # another sender got there first
                if path is None:
                    smtp.send(sender, customer["email"], data)
                else:
                    atomic_write_bytes(path, data)
            results.append(
                DigestResult(
                    customer_id=cid,
                    run_date=run_date,
                    sent_via="smtp" if use_smtp else "outbox",
                    message_id=str(msg["Message-ID"]),
                    path=path,
                    hit_count=len(hits),
                )
            )
    finally:
        smtp.close()
    return results
