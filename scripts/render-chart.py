#!/usr/bin/env python3
"""A small stand-in for `helm template` on machines without helm.

Renders deploy/helm/switchboard with its values.yaml (plus `--set a.b=c` overrides) using a
Python interpreter of the Go-template subset the chart uses (if/else/range/with/define/include,
variables, pipelines) and the handful of Sprig/Helm functions it calls. It is a check, not a
replacement: `helm lint` / `helm template` stay the reference where helm exists.

    python3 scripts/render-chart.py [--set gateway.autoscaling.enabled=true ...] > out.yaml
"""
import base64
import hashlib
import os
import random
import re
import string
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHART = os.path.join(ROOT, "deploy/helm/switchboard")


class TemplateError(Exception):
    pass


# ------------------------------------------------------------------ lexing / parsing
ACTION = re.compile(r"{{(-\s)?(.*?)(\s-)?}}", re.S)


def tokenize(text):
    out, pos = [], 0
    for m in ACTION.finditer(text):
        out.append(["text", text[pos:m.start()]])
        out.append(["action", m.group(2).strip(), bool(m.group(1)), bool(m.group(3))])
        pos = m.end()
    out.append(["text", text[pos:]])
    for i, tok in enumerate(out):  # trim markers
        if tok[0] == "action":
            if tok[2] and i > 0:
                out[i - 1][1] = out[i - 1][1].rstrip()
            if tok[3] and i + 1 < len(out):
                out[i + 1][1] = out[i + 1][1].lstrip()
    return [t for t in out if not (t[0] == "action" and t[1].startswith("/*"))]


def parse(tokens, defines):
    """Returns a list of nodes; fills `defines`."""
    pos = 0

    def block(stop):
        nonlocal pos
        nodes = []
        while pos < len(tokens):
            tok = tokens[pos]
            if tok[0] == "text":
                nodes.append(("text", tok[1]))
                pos += 1
                continue
            body = tok[1]
            word = body.split(None, 1)[0] if body else ""
            if word in stop:
                return nodes, body
            pos += 1
            if word in ("if", "with", "range"):
                arg = body[len(word):].strip()
                inner, end = block({"else", "end"})
                else_nodes = []
                if end.startswith("else"):
                    pos += 1
                    rest = end[4:].strip()
                    if rest.startswith("if "):  # else if: nest
                        tokens.insert(pos, ["action", rest, False, False])
                        sub, end2 = block({"end"})  # parses the inserted `if` fully
                        else_nodes = sub
                        # the nested if consumed its own end; ours follows
                        end = end2
                        if end != "end":
                            raise TemplateError("else-if without end")
                    else:
                        else_nodes, end = block({"end"})
                pos += 1
                nodes.append((word, arg, inner, else_nodes))
            elif word == "define":
                name = re.match(r'define\s+"([^"]+)"', body).group(1)
                inner, _ = block({"end"})
                pos += 1
                defines[name] = inner
            else:
                nodes.append(("expr", body))
        if stop:
            raise TemplateError(f"missing {stop}")
        return nodes, None

    nodes, _ = block(set())
    return nodes


# ------------------------------------------------------------------ expressions
TOKEN = re.compile(r'\s*(\(|\)|\||:=|=(?!=)|"(?:[^"\\]|\\.)*"|`[^`]*`|[^\s()|]+)')


def split_tokens(expr):
    toks, pos = [], 0
    expr = expr.strip()
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m:
            raise TemplateError(f"cannot lex {expr!r}")
        toks.append(m.group(1))
        pos = m.end()
    return toks


def to_str(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, (dict, list)):
        return str(v)
    return str(v)


def truthy(v):
    return bool(v) if not isinstance(v, (int, float)) or isinstance(v, bool) else v != 0


def to_yaml(v):
    if v == {}:
        return "{}"
    if v == []:
        return "[]"
    if v is None:
        return "null"
    return yaml.safe_dump(v, default_flow_style=False, sort_keys=True).rstrip("\n")


class Renderer:
    def __init__(self, defines, templates, lookup=None):
        self.defines = defines
        self.templates = templates
        self.lookup_data = lookup or {}

    def funcs(self):
        def default(d, v=None):
            return v if truthy(v) else d

        return {
            "default": default,
            "trunc": lambda n, s: s[: int(n)],
            "trimSuffix": lambda suf, s: s[: -len(suf)] if suf and s.endswith(suf) else s,
            "contains": lambda sub, s: sub in s,
            "printf": lambda fmt, *a: re.sub(r"%[sdv]", "{}", fmt).format(*[to_str(x) for x in a]),
            "print": lambda *a: "".join(to_str(x) for x in a),
            "replace": lambda old, new, s: s.replace(old, new),
            "quote": lambda *a: " ".join('"' + to_str(x).replace("\\", "\\\\").replace('"', '\\"') + '"' for x in a),
            "nindent": lambda n, s: "\n" + "\n".join((" " * int(n) + l) if l else l for l in to_str(s).split("\n")),
            "indent": lambda n, s: "\n".join((" " * int(n) + l) if l else l for l in to_str(s).split("\n")),
            "toYaml": to_yaml,
            "b64enc": lambda s: base64.b64encode(to_str(s).encode()).decode(),
            "sha256sum": lambda s: hashlib.sha256(to_str(s).encode()).hexdigest(),
            "dict": lambda *a: {a[i]: a[i + 1] for i in range(0, len(a), 2)},
            "list": lambda *a: list(a),
            "index": lambda c, *k: self._index(c, k),
            "add": lambda *a: int(sum(int(x) for x in a)),
            "mul": lambda *a: int(eval("*".join(str(int(x)) for x in a))),
            "int": lambda x: int(x),
            "not": lambda x: not truthy(x),
            "eq": lambda a, *b: any(a == x for x in b),
            "ne": lambda a, b: a != b,
            "and": lambda *a: next((x for x in a if not truthy(x)), a[-1]),
            "or": lambda *a: next((x for x in a if truthy(x)), a[-1]),
            "get": lambda d, k: self._get(d, k),
            "lookup": lambda api, kind, ns, name: self.lookup_data.get((kind, ns, name), {}),
            "randAlphaNum": lambda n: "".join(random.choice(string.ascii_letters + string.digits) for _ in range(int(n))),
            "include": lambda name, ctx: self.include(name, ctx),
            "toString": to_str,
        }

    @staticmethod
    def _index(c, keys):
        for k in keys:
            c = c[k]
        return c

    @staticmethod
    def _get(d, k):
        if not isinstance(d, dict):
            raise TemplateError(f"get on a non-map {d!r}")
        return d.get(k, "")

    def include(self, name, ctx):
        if name in self.defines:
            return self.render_nodes(self.defines[name], ctx, {"$": ctx})
        if name in self.templates:
            return self.render_nodes(self.templates[name], ctx, {"$": ctx})
        raise TemplateError(f"include of unknown template {name!r}")

    # -- evaluation
    def field(self, base, path):
        v = base
        for part in path:
            if not part:
                continue
            if isinstance(v, dict):
                if part not in v:
                    return None
                v = v[part]
            elif v is None:
                raise TemplateError(f"nil pointer evaluating .{part}")
            else:
                raise TemplateError(f"can't evaluate field {part} in {type(v).__name__}")
        return v

    def operand(self, tok, dot, vars_):
        if tok.startswith('"'):
            return bytes(tok[1:-1], "utf-8").decode("unicode_escape")
        if tok.startswith("`"):
            return tok[1:-1]
        if re.fullmatch(r"-?\d+", tok):
            return int(tok)
        if tok in ("true", "false"):
            return tok == "true"
        if tok == "nil":
            return None
        if tok == ".":
            return dot
        if tok.startswith("."):
            return self.field(dot, tok[1:].split("."))
        if tok.startswith("$"):
            name, _, rest = tok.partition(".")
            if name not in vars_:
                raise TemplateError(f"undefined variable {name}")
            return self.field(vars_[name], rest.split(".")) if rest else vars_[name]
        return ("func", tok)

    def eval_cmd(self, toks, dot, vars_, piped=None, has_piped=False):
        args = []
        i = 0
        while i < len(toks):
            t = toks[i]
            if t == "(":
                depth, j = 1, i + 1
                while depth:
                    depth += {"(": 1, ")": -1}.get(toks[j], 0)
                    j += 1
                args.append(self.eval_pipeline(toks[i + 1 : j - 1], dot, vars_))
                i = j
            else:
                args.append(self.operand(t, dot, vars_))
                i += 1
        head = args[0]
        if isinstance(head, tuple) and head[0] == "func":
            fn = self.funcs().get(head[1])
            if fn is None:
                raise TemplateError(f"unknown function {head[1]!r}")
            rest = [a for a in args[1:]]
            if has_piped:
                rest.append(piped)
            return fn(*rest)
        if len(args) > 1 or has_piped:
            raise TemplateError(f"cannot call a non-function {toks}")
        return head

    def eval_pipeline(self, toks, dot, vars_):
        # split on top-level pipes
        cmds, cur, depth = [], [], 0
        for t in toks:
            if t == "(":
                depth += 1
            elif t == ")":
                depth -= 1
            if t == "|" and depth == 0:
                cmds.append(cur)
                cur = []
            else:
                cur.append(t)
        cmds.append(cur)
        val, has = None, False
        for cmd in cmds:
            val = self.eval_cmd(cmd, dot, vars_, val, has)
            has = True
        return val

    def eval_action(self, body, dot, vars_, declare_ok=True):
        toks = split_tokens(body)
        if len(toks) >= 2 and toks[0].startswith("$") and toks[1] in (":=", "="):
            val = self.eval_pipeline(toks[2:], dot, vars_)
            if toks[1] == "=" and toks[0] not in vars_:
                raise TemplateError(f"assignment to undeclared {toks[0]}")
            vars_[toks[0]] = val
            return None, True
        return self.eval_pipeline(toks, dot, vars_), False

    def render_nodes(self, nodes, dot, vars_):
        out = []
        for node in nodes:
            kind = node[0]
            if kind == "text":
                out.append(node[1])
            elif kind == "expr":
                val, assigned = self.eval_action(node[1], dot, vars_)
                if not assigned:
                    out.append(to_str(val))
            elif kind in ("if", "with"):
                scope = dict(vars_)
                val, _ = self.eval_action(node[1], dot, scope)
                if truthy(val):
                    out.append(self.render_nodes(node[2], val if kind == "with" else dot, scope))
                else:
                    out.append(self.render_nodes(node[3], dot, dict(vars_)))
                # variables assigned with = inside blocks update the outer scope
                for k in vars_:
                    if k in scope:
                        vars_[k] = scope[k]
            elif kind == "range":
                arg = node[1]
                m = re.match(r"(\$\w+)\s*(?:,\s*(\$\w+))?\s*:=\s*(.*)", arg, re.S)
                names = []
                if m:
                    names = [n for n in (m.group(1), m.group(2)) if n]
                    arg = m.group(3)
                coll, _ = self.eval_action(arg, dot, dict(vars_))
                items = sorted(coll.items()) if isinstance(coll, dict) else list(enumerate(coll or []))
                if not items:
                    out.append(self.render_nodes(node[3], dot, dict(vars_)))
                for k, v in items:
                    scope = dict(vars_)
                    if len(names) == 1:
                        scope[names[0]] = v
                    elif len(names) == 2:
                        scope[names[0]], scope[names[1]] = k, v
                    out.append(self.render_nodes(node[2], v, scope))
        return "".join(out)


def deep_set(d, path, value):
    keys = path.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = yaml.safe_load(value)


def render(sets=(), release="switchboard", namespace="switchboard", lookup=None):
    values = yaml.safe_load(open(os.path.join(CHART, "values.yaml")))
    for s in sets:
        k, _, v = s.partition("=")
        deep_set(values, k, v)
    chart = yaml.safe_load(open(os.path.join(CHART, "Chart.yaml")))
    tdir = os.path.join(CHART, "templates")
    defines, templates = {}, {}
    for name in sorted(os.listdir(tdir)):
        nodes = parse(tokenize(open(os.path.join(tdir, name)).read()), defines)
        templates[f"switchboard/templates/{name}"] = nodes
    ctx = {
        "Values": values,
        "Chart": {"Name": chart["name"], "Version": chart["version"], "AppVersion": chart.get("appVersion", "")},
        "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
        "Template": {"BasePath": "switchboard/templates"},
    }
    r = Renderer(defines, templates, lookup)
    docs = {}
    for name, nodes in templates.items():
        base = os.path.basename(name)
        if base.startswith("_"):
            continue
        docs[base] = r.render_nodes(nodes, ctx, {"$": ctx})
    return docs


if __name__ == "__main__":
    args = sys.argv[1:]
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    for name, text in render(sets).items():
        if name == "NOTES.txt":
            continue
        print(f"---\n# Source: switchboard/templates/{name}\n{text.strip()}")
