"""libvirt's save header: the domain XML between the header and the libxl stream.

libvirt (libxl_domain.c) reads ``xml_len`` bytes and parses them as a C string, so the XML
must end with its NUL; the root element is ``<domain type='xen'>``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from xenmig_core.engine import StreamContext
from xenmig_core.engine.context import HeaderValue

#: The report keeps at most this much of the XML text.
XML_SHOWN = 64 << 10
#: an XML longer than this is not parsed: its element tree could take many times its size
MAX_PARSED = 1 << 20


def check_domain_xml(header: HeaderValue, ctx: StreamContext) -> None:
    """Decode and parse the XML; store ``xml_text`` (capped), ``name``, ``uuid`` and
    ``os_type`` in ``header.fields``; report a missing NUL or unparsable XML as errors."""
    xml = header.fields["xml"]       # bytes, or a spilled value (more than 4 MiB)
    where = {"unit": header.name, "offset": header.offset}
    if len(xml) > MAX_PARSED:
        if bytes(xml[-1:]) != b"\0":
            ctx.error("the domain XML is not NUL-terminated (libvirt writes xml_len = length "
                      "+ 1 and parses it as a C string)", field="xml", **where)
        ctx.warning(f"a domain XML of {len(xml)} bytes is not parsed (xenmig parses at most "
                    f"{MAX_PARSED >> 20} MiB; libvirt writes a few KiB)", field="xml", **where)
        header.fields["xml_text"] = bytes(xml[:XML_SHOWN]).decode("utf-8", errors="replace")
        header.fields["xml_text_truncated"] = True
        header.summary = f"{len(xml)} bytes: not parsed"
        return
    raw = bytes(xml)
    if not raw.endswith(b"\0"):
        ctx.error("the domain XML is not NUL-terminated (libvirt writes xml_len = length + 1 "
                  "and parses it as a C string)", field="xml", **where)
    text_bytes = raw.rstrip(b"\0")
    if b"\0" in text_bytes:
        ctx.warning("NUL bytes inside the domain XML: libvirt stops reading at the first",
                    field="xml", **where)
        text_bytes = text_bytes.split(b"\0", 1)[0]
    try:
        text = text_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        ctx.error(f"the domain XML is not UTF-8: {exc}", field="xml", **where)
        return
    header.fields["xml_text"] = text[:XML_SHOWN]
    if len(text) > XML_SHOWN:
        header.fields["xml_text_truncated"] = True
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        ctx.error(f"the domain XML does not parse: {exc}", field="xml", **where)
        return
    if root.tag != "domain":
        ctx.error(f"the XML's root element is <{root.tag}>, not <domain>", field="xml", **where)
        return
    if root.get("type") != "xen":
        ctx.warning(f"domain type {root.get('type')!r}, expected 'xen' (libvirt's libxl "
                    "driver)", field="xml", **where)
    name = (root.findtext("name") or "").strip()
    uuid = (root.findtext("uuid") or "").strip()
    os_type = (root.findtext("os/type") or "").strip()
    header.fields.update(name=name, uuid=uuid, os_type=os_type)
    ctx.state["domain_name"] = name
    facts = [f"domain {name!r}" if name else "no domain name"]
    if os_type:
        facts.append(f"os type {os_type}")
    if uuid:
        facts.append(f"uuid {uuid}")
    header.summary = f"{len(raw)} bytes: " + ", ".join(facts)
