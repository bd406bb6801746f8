"""Answers the edge builds itself (view records, rewrites) with dnslib: rare, not hot."""

from __future__ import annotations

from typing import Any

from dnslib import QTYPE, RCODE, RR, DNSRecord

from dnsflow.edge import wire


def local_answer(q: wire.Query, records: list[Any], follow: bytes | None = None
                 ) -> tuple[bytes, list[str], str]:
    """Reply to ``q`` from local records (matching type, or a CNAME), plus a followed tail.

    ``follow`` is an upstream answer for a CNAME target whose answer records are appended.
    Returns (packet, event answers, rcode mnemonic).
    """
    req = DNSRecord.parse(q.raw)
    reply = req.reply(ra=1, aa=1)
    qname = str(req.q.qname)
    qtype = wire.qtype_name(q.qtype)
    answers: list[str] = []
    names = {r.name.lower().rstrip(".") for r in records}
    for r in records:
        rtype = r.rtype.upper()
        if rtype != qtype and rtype != "CNAME" and qtype != "ANY":
            continue
        owner = qname if r.name.lower().rstrip(".") == wire.wire_to_text(q.qwire) else r.name
        rdata = r.rdata
        if rtype in ("CNAME", "PTR", "NS", "MX", "SRV") and not rdata.endswith("."):
            rdata += "."
        if rtype == "TXT" and not rdata.startswith('"'):
            rdata = '"' + rdata.replace('"', '\\"') + '"'
        for rr in RR.fromZone(f"{owner.rstrip('.')}. {int(r.ttl)} IN {rtype} {rdata}"):
            reply.add_answer(rr)
        answers.append(f"{rtype} {r.rdata.rstrip('.') if rtype != 'TXT' else r.rdata}")
    rcode = "NOERROR"
    if follow is not None:
        tail = DNSRecord.parse(follow)
        for rr in tail.rr:
            reply.add_answer(rr)
            answers.append(f"{QTYPE.get(rr.rtype)} {str(rr.rdata).rstrip('.')}")
        rcode = RCODE.get(tail.header.rcode)
        reply.header.rcode = tail.header.rcode
        for rr in tail.auth:
            reply.add_auth(rr)
    elif not names:
        rcode = "NXDOMAIN"
        reply.header.rcode = wire.NXDOMAIN
    if q.edns:
        reply.add_ar(RR(rtype=QTYPE.OPT, rclass=1232, ttl=0x8000 if q.do else 0))
    data = bytes(reply.pack())
    # echo the client's exact question bytes (dnslib keeps case, but be exact)
    qlen = len(q.qwire)
    data = data[:12] + q.qwire + data[12 + qlen:]
    return data, answers, str(rcode)
