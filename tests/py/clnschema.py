"""Validation of JSON objects against Core Lightning's own JSON schemas.

CLN's schemas (shared/reference/cln-schemas, meta-schema rpc-schema-draft.json) are draft-07
JSON Schemas with extra `type` names (u64, msat, pubkey, short_channel_id, ...) and extra
annotation keywords (`added`, `deprecated`, `hidden`, `untyped`, `comment`).  This module
maps the custom types onto checks of the JSON value, and gives `deprecated` a meaning:
a field whose deprecation *ended* at or before the CLN release we copy must not be
present any more (CLN removed it).  `added` is a pure annotation and is only
checked for being a version string.
"""

import json
import os
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

import jsonschema
from jsonschema.exceptions import ValidationError

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = Path(os.environ.get("CLN_SCHEMAS",
                                  REPO_ROOT.parent / "shared" / "reference" / "cln-schemas"))

# The CLN release whose surface Fulgur copies (see shared/reference/cln-protocol.md §0).
TARGET_CLN_VERSION = "v26.06"

_HEX_RE = re.compile(r"^([0-9a-fA-F]{2})*$")


def schemas_available():
    return (SCHEMA_DIR / "rpc-schema-draft.json").is_file()


def skip_reason():
    """Why the schemas are missing (conftest stops the suite with it)."""
    return f"CLN schema directory not found at {SCHEMA_DIR} (set CLN_SCHEMAS to override)"


# --------------------------------------------------------------------------------------
# Custom types (after CLN's own pyln-testing validator, written from its description)
# --------------------------------------------------------------------------------------

def _is_int(checker, v):
    return checker.is_type(v, "integer")


def _uint(bits):
    def check(checker, v):
        return _is_int(checker, v) and 0 <= v < 2 ** bits
    return check


def _is_hex(checker, v):
    return checker.is_type(v, "string") and _HEX_RE.match(v) is not None


def _hex_len(nbytes):
    def check(checker, v):
        return _is_hex(checker, v) and len(v) == 2 * nbytes
    return check


def _is_pubkey(checker, v):
    return _hex_len(33)(checker, v) and v[:2] in ("02", "03")


def _is_signature(checker, v):
    # DER-encoded ECDSA signature, hex.
    return _is_hex(checker, v) and 16 <= len(v) <= 146 and v.startswith("30")


def _scid_parts(v):
    parts = v.split("x")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    return [int(p) for p in parts]


def _is_scid(checker, v):
    if not checker.is_type(v, "string"):
        return False
    p = _scid_parts(v)
    return p is not None and p[0] < 2 ** 24 and p[1] < 2 ** 24 and p[2] < 2 ** 16


def _is_scid_dir(checker, v):
    if not checker.is_type(v, "string") or "/" not in v:
        return False
    scid, d = v.rsplit("/", 1)
    return d in ("0", "1") and _is_scid(checker, scid)


def _is_outpoint(checker, v):
    if not checker.is_type(v, "string") or ":" not in v:
        return False
    txid, n = v.split(":", 1)
    return _hex_len(32)(checker, txid) and n.isdigit() and int(n) < 2 ** 32


_AMOUNT_RE = re.compile(r"^([0-9]+(\.[0-9]+)?)(msat|sat|btc)$")


def _parse_amount_msat(v):
    """Amount as accepted on CLN's *input* side: integer msat or a string with unit."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v if v >= 0 else None
    if isinstance(v, str):
        m = _AMOUNT_RE.match(v)
        if not m:
            return None
        try:
            num = Decimal(m.group(1))
        except InvalidOperation:
            return None
        mult = {"msat": 1, "sat": 1000, "btc": 100_000_000_000}[m.group(3)]
        msat = num * mult
        return int(msat) if msat == int(msat) else None
    return None


def _amount(is_request, extra_words=()):
    def check(checker, v):
        if isinstance(v, str) and v in extra_words:
            return True
        if is_request:
            return _parse_amount_msat(v) is not None
        # Output side: plain non-negative integer msat (the "...msat" strings are gone).
        return _is_int(checker, v) and v >= 0
    return check


def _is_feerate(checker, v):
    if _is_int(checker, v):
        return v >= 0
    if not checker.is_type(v, "string"):
        return False
    if v in ("slow", "normal", "urgent", "minimum"):
        return True
    return re.match(r"^[0-9]+(perkw|perkb)?$", v) is not None or re.match(r"^[0-9]+blocks$", v) is not None


def _is_currency(checker, v):
    return checker.is_type(v, "string") and re.match(r"^[A-Z]{3}$", v) is not None


def _is_outputdesc(checker, v):
    # {"address": amount} objects (request side of withdraw/multiwithdraw)
    return checker.is_type(v, "object") and len(v) == 1


def make_validator_class(is_request):
    types = {
        "hex": _is_hex,
        "hash": _hex_len(32),
        "secret": _hex_len(32),
        "txid": _hex_len(32),
        "u64": _uint(64),
        "u32": _uint(32),
        "u16": _uint(16),
        "u8": _uint(8),
        "pubkey": _is_pubkey,
        "sat": _amount(is_request),
        "sat_or_all": _amount(is_request, ("all",)),
        "msat": _amount(is_request),
        "msat_or_all": _amount(is_request, ("all",)),
        "msat_or_any": _amount(is_request, ("any",)),
        "currency": _is_currency,
        "signature": _is_signature,
        "bip340sig": _hex_len(64),
        "short_channel_id": _is_scid,
        "short_channel_id_dir": _is_scid_dir,
        "outpoint": _is_outpoint,
        "feerate": _is_feerate,
        "outputdesc": _is_outputdesc,
    }
    type_checker = jsonschema.Draft7Validator.TYPE_CHECKER.redefine_many(types)

    def deprecated(validator, value, instance, schema):
        # value: [start] or [start, end]; present instance => check it was not removed.
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            yield ValidationError(f"schema bug: 'deprecated' must be a list of versions, got {value!r}")
            return
        if len(value) >= 2 and version_key(value[1]) <= version_key(TARGET_CLN_VERSION):
            yield ValidationError(
                f"field deprecated in {value[0]} and removed in {value[1]} "
                f"(CLN {TARGET_CLN_VERSION} no longer has it) is still present: {instance!r}")

    def added(validator, value, instance, schema):
        if not isinstance(value, str):
            yield ValidationError(f"schema bug: 'added' must be a version string, got {value!r}")

    return jsonschema.validators.extend(
        jsonschema.Draft7Validator,
        validators={"deprecated": deprecated, "added": added},
        type_checker=type_checker)


def version_key(v):
    """'v24.11' -> (24, 11, 0); 'pre-v0.10.1' -> (0, 10, 0)."""
    m = re.search(r"v?(\d+)\.(\d+)(?:\.(\d+))?", v)
    if not m:
        return (0, 0, 0)
    return tuple(int(x or 0) for x in m.groups())


ResponseValidator = make_validator_class(is_request=False)
RequestValidator = make_validator_class(is_request=True)

_cache = {}


def load(relpath):
    """Load a schema file, e.g. 'getinfo.json', 'hook/rpc_command.json'."""
    if relpath not in _cache:
        with open(SCHEMA_DIR / relpath) as f:
            _cache[relpath] = json.load(f)
    return _cache[relpath]


def has_schema(relpath):
    return (SCHEMA_DIR / relpath).is_file()


def errors(relpath, instance, part="response"):
    """List of human-readable validation errors (empty = valid)."""
    schema = load(relpath)[part]
    cls = RequestValidator if part == "request" else ResponseValidator
    v = cls(schema)
    out = []
    for e in sorted(v.iter_errors(instance), key=lambda e: list(e.absolute_path)):
        path = "/".join(str(p) for p in e.absolute_path) or "<root>"
        out.append(f"{relpath} [{part}] at {path}: {e.message}")
    return out


def validate(relpath, instance, part="response"):
    """Raise AssertionError with every problem if `instance` does not match."""
    errs = errors(relpath, instance, part)
    if errs:
        raise AssertionError("schema validation failed:\n  " + "\n  ".join(errs)
                             + "\ninstance: " + json.dumps(instance)[:2000])


def schema_for(method):
    """The schema file the test RPC client validates `method`'s result against: CLN's
    `<method>.json` when CLN has that command, whether or not it is listed below."""
    rel = RPC_SCHEMAS.get(method)
    if rel is None and (SCHEMA_DIR / f"{method}.json").is_file():
        rel = f"{method}.json"
    return rel


# Methods whose responses are validated automatically by the test RPC client (any other
# method CLN has a schema for is too: `schema_for`).
RPC_SCHEMAS = {
    "getinfo": "getinfo.json",
    "help": "help.json",
    "listconfigs": "listconfigs.json",
    "check": "check.json",
    "setconfig": "setconfig.json",
    "plugin": "plugin.json",
    "datastore": "datastore.json",
    "listdatastore": "listdatastore.json",
    "deldatastore": "deldatastore.json",
    "notifications": "notifications.json",
    "stop": "stop.json",
    "decode": "decode.json",
    "feerates": "feerates.json",
    "newaddr": "newaddr.json",
    "listfunds": "listfunds.json",
    "withdraw": "withdraw.json",
    "invoice": "invoice.json",
    "listinvoices": "listinvoices.json",
    "waitinvoice": "waitinvoice.json",
    "waitanyinvoice": "waitanyinvoice.json",
    "delinvoice": "delinvoice.json",
    "autoclean-once": "autoclean-once.json",
    "sendpay": "sendpay.json",
    "waitsendpay": "waitsendpay.json",
    "listsendpays": "listsendpays.json",
    "getroute": "getroute.json",
    "listchannels": "listchannels.json",
    "listnodes": "listnodes.json",
    "signmessage": "signmessage.json",
    "checkmessage": "checkmessage.json",
    "fundchannel": "fundchannel.json",
    "close": "close.json",
    "listpeerchannels": "listpeerchannels.json",
    "listforwards": "listforwards.json",
    "listhtlcs": "listhtlcs.json",
    "sendcustommsg": "sendcustommsg.json",
}


def meta_errors(relpath):
    """Check one of CLN's schema files against the meta-schema rpc-schema-draft.json."""
    meta = load("rpc-schema-draft.json")
    v = jsonschema.Draft7Validator(meta)
    return [f"{relpath}: {'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in v.iter_errors(load(relpath))]
