"""Whether two names name the same party: shared by enrichment (operator, seller) and pricing
(a licence held by the page's operator).

Names are compared ignoring case, punctuation and a trailing legal form ("Nordic Prints GmbH" is
"Nordic Prints").
"""

from __future__ import annotations

import re

# Legal forms that mark a company name (German, Austrian, Swiss, English, and common EU forms).
LEGAL_FORM_PATTERN = (
    r"(?:GmbH\s*&\s*Co\.\s*KG(?:aA)?|gGmbH|GmbH|mbH|UG\s*\(haftungsbeschränkt\)|UG|AG|KGaA|KG|OHG|"
    r"e\.\s?K\.|e\.\s?Kfm\.|e\.\s?V\.|GbR|PartG(?:\s*mbB)?|Ltd\.?|Limited|LLC|L\.L\.C\.|LLP|Inc\.?|Corp\.?|Corporation|"
    r"plc|PLC|S\.A\.|S\.L\.|SAS|SARL|S\.à\s?r\.l\.|S\.r\.l\.|S\.p\.A\.|B\.V\.|N\.V\.|AB|Oy|ApS|A/S|AS|Pty\.?\s+Ltd\.?)"
)


def same_party(a: str | None, b: str | None) -> bool:
    """Two names of the same company: equal ignoring case, punctuation and a trailing legal form."""
    if not a or not b:
        return False
    return normalised_name(a) == normalised_name(b) or normalised_name(without_legal_form(a)) == normalised_name(without_legal_form(b))


def normalised_name(name: str) -> str:
    name = name.casefold().replace("&", " and ").replace("+", " and ")
    return " ".join(re.sub(r"[^\w/]+", " ", name).split())


_TRAILING_LEGAL_FORM = re.compile(rf"[\s,]+{LEGAL_FORM_PATTERN}[\s.,]*$")


def without_legal_form(name: str) -> str:
    """"Nordic Prints GmbH" -> "Nordic Prints"; a name that is only a legal form stays as it is."""
    stripped = name
    for _ in range(3):  # "X GmbH & Co. KG" is one form; a few rounds cover stacked ones
        shorter = _TRAILING_LEGAL_FORM.sub("", stripped)
        if shorter == stripped:
            break
        stripped = shorter
    return stripped if stripped.strip() else name
