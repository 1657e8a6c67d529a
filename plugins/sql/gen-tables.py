#!/usr/bin/env python3
"""Writes plugins/sql/src/tables.json, the tables of the `sql` plugin, from CLN's schemas of
the list commands (../shared/reference/cln-schemas), following CLN's plugins/sql.c: a
command's array of objects is a table named after the command without "list" ("-" as
"_"); an object field is folded into its table as columns named `<field>_<member>`; an
array field is a table of its own, `<table>_<field>`, whose rows point at their parent
(`row`, `arrindex`); fields deprecated before v23.02 and `peers.log` are left out; "index"
is named "idx". Run it again when the schemas change:

    python3 plugins/sql/gen-tables.py ../shared/reference/cln-schemas
"""
import json
import os
import sys

COMMANDS = ["listchannels", "listnodes", "listhtlcs", "listforwards", "listinvoices",
            "listsendpays", "listnetworkevents", "listchainmoves", "listchannelmoves",
            "listoffers", "listpeers", "listpeerchannels", "listclosedchannels",
            "listtransactions", "bkpr-listaccountevents", "bkpr-listincome"]


def table_name(cmd):
    out, i = [], 0
    at = cmd.find("list")
    while i < len(cmd):
        if i == at:
            i += 4
        elif cmd[i].isalnum():
            out.append(cmd[i])
            i += 1
        else:
            out.append("_")
            i += 1
    return "".join(out)


def version(v):
    parts = v.lstrip("v").split(".")
    return tuple(int(p) for p in parts[:2])


def too_old(prop):
    d = prop.get("deprecated")
    return bool(d) and version(d[0]) <= (23, 2)


def column_name(field, subobject):
    name = "idx" if field == "index" else field
    return f"{subobject}_{name}" if subobject else name


def add_object(table, schema, subobject, top):
    for key in ("properties",):
        for field, prop in schema.get(key, {}).items():
            if top["name"] == "peers" and field == "log" and not subobject:
                continue
            t = prop.get("type")
            if t is None or too_old(prop):
                continue
            if t == "array":
                items = prop.get("items", {})
                sub = {"name": f"{table['name']}_{table_name(field)}", "json": field, "cols": []}
                if items.get("type") == "object":
                    add_object(sub, items, None, top)
                else:
                    sub["single"] = True
                    sub["cols"].append({"db": column_name(field, None), "type": items.get("type", "string")})
                col = {"table": sub}
                db = column_name(field, subobject)
            elif t == "object":
                obj = {"name": f"{table['name']}_{table_name(field)}", "cols": []}
                add_object(obj, prop, field, top)
                col = {"obj": field, "cols": obj["cols"]}
                db = column_name(field, subobject)
            else:
                col = {"db": column_name(field, subobject), "json": field, "type": t}
                db = col["db"]
            if any(c.get("_db") == db for c in table["cols"]):
                continue
            col["_db"] = db
            table["cols"].append(col)
    for branch in schema.get("allOf", []):
        add_object(table, branch, subobject, top)
    for cond in ("then", "else"):
        if cond in schema:
            add_object(table, schema[cond], subobject, top)


def strip(table):
    for c in table["cols"]:
        c.pop("_db", None)
        if "table" in c:
            strip(c["table"])
        if "obj" in c:
            strip({"cols": c["cols"]})


def main(schemas):
    out = []
    for cmd in COMMANDS:
        s = json.load(open(os.path.join(schemas, f"{cmd}.json")))
        props = s["response"]["properties"]
        arr = next(iter(props))
        items = props[arr]["items"]
        table = {"name": table_name(cmd), "command": cmd, "json": arr, "cols": []}
        add_object(table, items, None, table)
        strip(table)
        out.append(table)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src", "tables.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/reference/cln-schemas")
