"""Sphinx glue for wsplugin's documentation site (``docs/conf.py`` loads it).

The pages in ``docs/`` are plain Markdown that GitHub renders as they are
and that ``tests/integration/test_docs.py`` runs. What only the site needs
is added here, while Sphinx reads them, so the Markdown never carries a
directive GitHub would show as a code block:

- the site's navigation (hidden toctrees) is made from ``docs/index.md``'s
  own link lists, one toctree per ``##`` section (:func:`toctrees`);
- a block marked ``<!-- example: examples/FILE [from line N] -->`` is a
  copy of that file, kept equal to it by the tests; the site includes the
  file itself instead (:func:`include_examples`);
- an API page (``.. wsplugin-module:: wsplugin.server``) documents the
  objects whose home is that module and links the ones it re-exports from
  elsewhere, so each object is described once (:func:`plan_module`);
- napoleon reads an attribute docstring's first line ``X: Y`` as "of type
  X"; wsplugin's attribute docstrings are prose (their type is the
  annotation), so they reach napoleon starting with a blank line.

The functions other than :func:`setup` need neither Sphinx nor a build:
``tests/test_docsite.py`` calls them directly.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import re
from dataclasses import dataclass, field
from typing import Any

# --- navigation from docs/index.md ------------------------------------------

_HEADING = re.compile(r"^##\s+(?P<title>.+?)\s*$")
_LINK = re.compile(r"\]\((?P<target>[^)#\s:]+)\.(?:md|rst)\)")


def toctrees(markdown: str) -> str:
    """Hidden MyST toctrees for a page of ``## Caption`` sections whose
    links (``[text](page.md)``) name the pages of that caption, in order.

    A page linked twice is listed under its first caption only (a page in
    two toctrees has two places in the sidebar). Links with a scheme or an
    anchor are not pages of the site.
    """
    sections: list[tuple[str, list[str]]] = []
    seen: set[str] = set()
    fenced = False
    for line in markdown.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        m = _HEADING.match(line)
        if m:
            sections.append((m.group("title"), []))
            continue
        if not sections:
            continue
        for link in _LINK.finditer(line):
            page = link.group("target")
            if page not in seen:
                seen.add(page)
                sections[-1][1].append(page)
    out = []
    for title, pages in sections:
        if pages:
            out.append(
                "\n```{toctree}\n:hidden:\n:caption: "
                + title
                + "\n\n"
                + "\n".join(pages)
                + "\n```\n"
            )
    return "".join(out)


# --- example files instead of their copies ------------------------------------

_EXAMPLE = re.compile(
    r"^\s*<!--\s*example:\s*(?P<path>\S+)(?:\s+from line\s+(?P<line>\d+))?\s*-->\s*$"
)
_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")

LEXERS = {"haproxy": "haproxy"}
"""Fence languages GitHub highlights that Pygments names otherwise."""


def include_examples(markdown: str, root: str = "/..") -> str:
    """The page with every block marked ``<!-- example: PATH -->`` (or
    ``... from line N``) replaced by a ``{literalinclude}`` of PATH (from
    line N), a path from the checkout's root; ``root`` is that root as
    literalinclude reads it (``/`` is the source directory, ``docs/``).
    """
    lines = markdown.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = _EXAMPLE.match(lines[i])
        out.append(lines[i])
        i += 1
        if not m:
            continue
        while i < len(lines) and (
            not lines[i].strip() or lines[i].lstrip().startswith("<!--")
        ):
            out.append(lines[i])
            i += 1
        fence = _FENCE.match(lines[i]) if i < len(lines) else None
        if fence is None:
            raise ValueError(f"line {i + 1}: an example marker without a block")
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        indent = fence.group("indent")
        lang = fence.group("lang")
        directive = [f"{indent}```{{literalinclude}} {root}/{m.group('path')}"]
        if lang:
            directive.append(f"{indent}:language: {LEXERS.get(lang, lang)}")
        if m.group("line"):
            directive.append(f"{indent}:lines: {m.group('line')}-")
        directive.append(f"{indent}```")
        out.extend(directive)
        i = end + 1
    return "\n".join(out)


# --- API pages -------------------------------------------------------------

API_MODULES = [
    "wsplugin.errors",
    "wsplugin.config",
    "wsplugin.connection",
    "wsplugin.server",
    "wsplugin.factory",
    "wsplugin.protocol",
    "wsplugin.handshake",
    "wsplugin.web",
    "wsplugin.auth",
    "wsplugin.tls",
    "wsplugin.uploads",
    "wsplugin.forward",
    "wsplugin.backplane",
    "wsplugin.channels",
    "wsplugin.metrics",
    "wsplugin.reactors",
    "wsplugin.logs",
    "wsplugin.testing",
    "wsplugin.client",
    "wsplugin.cli",
    "wsplugin.tap",
    "wsplugin.apps",
    "wsplugin",
]
"""Every public module, each with its page (``docs/api/NAME.rst``). An
object exported by several is described on the page of the module that
defines it if that one is public, else on the first in this order (the
package ``wsplugin`` last: it re-exports from the others)."""


@dataclass
class ModulePlan:
    """What one API page shows."""

    module: str
    documented: list[str] = field(default_factory=list)
    """Names autodoc describes on this page (``automodule :members:``)."""
    constants: list[tuple[str, str]] = field(default_factory=list)
    """(name, the private module that defines it): constants described on
    this page from the docstring written in that module."""
    elsewhere: list[tuple[str, str]] = field(default_factory=list)
    """(name, the full name of its description on another page)."""
    foreign: list[tuple[str, str]] = field(default_factory=list)
    """(name, the full name of another project's object it is)."""


def _exports(module: str) -> list[str]:
    return list(getattr(importlib.import_module(module), "__all__", []))


@functools.cache
def _imported_names(module: str) -> dict[str, str]:
    """``from X import NAME`` lines of a module's source: NAME -> X."""
    source = inspect.getsource(importlib.import_module(module))
    found = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                found[alias.asname or alias.name] = node.module
    return found


def origin(module: str, name: str) -> tuple[str, str]:
    """Where an exported name is defined: (module, name there). A class or
    function says so itself; a constant is followed through the
    ``from X import NAME`` lines of the modules re-exporting it."""
    obj = getattr(importlib.import_module(module), name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        return obj.__module__, obj.__qualname__
    while name in _imported_names(module):
        module = _imported_names(module)[name]
    return module, name


def _is_wsplugin(module: str) -> bool:
    return module == "wsplugin" or module.startswith("wsplugin.")


@functools.cache
def _exporters() -> dict[tuple[str, str], list[str]]:
    """Each exported object's origin -> the public modules exporting it."""
    exporters: dict[tuple[str, str], list[str]] = {}
    for module in API_MODULES:
        for name in _exports(module):
            exporters.setdefault(origin(module, name), []).append(module)
    return exporters


def home_of(defined_in: str, exported_by: list[str]) -> str | None:
    """The public module whose page describes an object defined in
    ``defined_in`` and exported by ``exported_by``: the defining module if
    it is one of those, else the first of them in :data:`API_MODULES`
    order; ``None`` for another project's object."""
    if not _is_wsplugin(defined_in):
        return None
    if defined_in in exported_by:
        return defined_in
    return min(exported_by, key=API_MODULES.index)


@functools.cache
def plan_module(module: str) -> ModulePlan:
    """Which of ``module``'s exports its page describes and which it links."""
    plan = ModulePlan(module)
    for name in _exports(module):
        where = origin(module, name)
        home = home_of(where[0], _exporters()[where])
        obj = getattr(importlib.import_module(module), name)
        if home is None:
            plan.foreign.append((name, ".".join(where)))
        elif home != module:
            plan.elsewhere.append((name, f"{home}.{name}"))
        elif inspect.isclass(obj) or inspect.isfunction(obj) or where[0] == module:
            plan.documented.append(name)
        else:
            plan.constants.append((name, where[0]))
    return plan


def constant_rst(module: str, name: str, defined_in: str) -> list[str]:
    """A ``py:data`` description of a constant re-exported from a private
    module, with the docstring written there (autodoc looks for one in the
    re-exporting module only)."""
    from sphinx.pycode import ModuleAnalyzer

    docs = ModuleAnalyzer.for_module(defined_in).find_attr_docs()
    value = getattr(importlib.import_module(module), name)
    text = repr(sorted(value) if isinstance(value, frozenset) else value)
    lines = [f".. py:data:: {module}.{name}", f"   :value: {text}", ""]
    lines += [f"   {line}" for line in docs.get(("", name), [])]
    return [*lines, ""]


@functools.cache
def api_paths() -> dict[str, str]:
    """Every public import path of a wsplugin object or constant
    (``wsplugin.client.HandshakeFailed``) -> the full name it is described
    under (``wsplugin.errors.HandshakeFailed``)."""
    paths: dict[str, str] = {}
    for module in API_MODULES:
        plan = plan_module(module)
        for name in plan.documented:
            paths[f"{module}.{name}"] = f"{module}.{name}"
        for name, _ in plan.constants:
            paths[f"{module}.{name}"] = f"{module}.{name}"
        for name, target in plan.elsewhere:
            paths[f"{module}.{name}"] = target
    return paths


@functools.cache
def api_names() -> dict[str, set[str]]:
    """Every public name (``HandshakeFailed``) -> the full names it is
    described under (one, unless two modules export different objects
    under one name)."""
    names: dict[str, set[str]] = {}
    for path, target in api_paths().items():
        names.setdefault(path.rsplit(".", 1)[1], set()).add(target)
    return names


def api_target(target: str, module: str | None = None) -> str | None:
    """The full name a reference to wsplugin's API means, or ``None`` if it
    names no public object: an import path (``wsplugin.Connection``, also
    relative to ``module``, the current one) or a public name found under
    one description only (``HandshakeFailed``), each maybe followed by an
    attribute (``ClientConnection.response``)."""
    paths = api_paths()
    parts = target.split(".")
    for base in ([module] if module else []) + [None]:
        for n in range(len(parts), 0, -1):
            head = ".".join(parts[:n])
            full = f"{base}.{head}" if base else head
            if full in paths:
                return ".".join([paths[full], *parts[n:]])
    described = api_names().get(parts[0], set())
    if len(described) == 1:
        return ".".join([next(iter(described)), *parts[1:]])
    return None


def is_api_reference(target: str) -> bool:
    """Whether a reference names (or means to name) wsplugin's public API:
    a ``wsplugin.`` path without a private part, or a public name. Other
    references (other projects' objects, names imported only for type
    checking, private helpers) are shown as plain text."""
    parts = target.split(".")
    if parts[0] == "wsplugin":
        return not any(p.startswith("_") for p in parts)
    return parts[0] in api_names()


def module_rst(plan: ModulePlan) -> list[str]:
    """The reStructuredText an API page's directive stands for."""
    lines = [f".. automodule:: {plan.module}"]
    if plan.documented:
        lines.append(f"   :members: {', '.join(plan.documented)}")
    lines.append("")
    for name, defined_in in plan.constants:
        lines += constant_rst(plan.module, name, defined_in)
    if plan.elsewhere or plan.foreign:
        lines += [".. rubric:: Also exported here", ""]
        for name, target in plan.elsewhere:
            lines.append(f"- :py:obj:`{plan.module}.{name} <{target}>`")
        for name, target in plan.foreign:
            lines.append(f"- ``{plan.module}.{name}`` is ``{target}``")
        lines.append("")
    return lines


# --- Sphinx ------------------------------------------------------------------


_ATTRIBUTES = ("attribute", "data", "property")
_originals: dict[str, list[str]] = {}


def _keep_attribute_docstring(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Before napoleon: keep an attribute's docstring as written."""
    if what in _ATTRIBUTES:
        _originals[name] = list(lines)


def _reparse_attribute_docstring(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """After napoleon: parse an attribute's docstring as any other one
    (Google sections and all), without the ``TYPE: description`` reading."""
    from sphinx.ext.napoleon.docstring import GoogleDocstring

    original = _originals.pop(name, None)
    if what in _ATTRIBUTES and original is not None:
        lines[:] = GoogleDocstring(original, app.config, app, "", name, obj).lines()


def signature_text(text: str | None) -> str | None:
    """A signature as autodoc wrote it, made parseable and readable: a
    zope interface in an annotation is its name, not its repr; a dataclass
    field's ``default_factory`` default is ``...``, not ``<factory>`` (which
    is not Python, so the whole signature would be split on commas)."""
    if text is None:
        return None
    text = re.sub(r"<InterfaceClass ([\w.]+)>", r"~\1", text)
    return text.replace("=<factory>", "=...").replace(" = <factory>", " = ...")


def _signature(
    app: Any, what: str, name: str, obj: Any, options: Any, sig: Any, ret: Any
) -> tuple[str | None, str | None]:
    return signature_text(sig), signature_text(ret)


def _missing_reference(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """Resolve a reference to a re-exported name to its one description."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"]
    if "<InterfaceClass" in target:  # an attribute's type, a zope interface
        from docutils import nodes

        return nodes.literal(
            text=re.sub(r"<InterfaceClass [\w.]*?(\w+)>", r"\1", target)
        )
    domain = env.get_domain("py")
    full = api_target(target, node.get("py:module"))
    if full is not None and full != target:
        found = domain.resolve_xref(
            env, node["refdoc"], app.builder, node["reftype"], full, node, contnode
        )
        if found is not None:
            return found
    if node.get("reftype") == "attr":
        # An attribute described in its class's "Attributes:" section (a
        # field of the class's description, not an entry of its own):
        # the link goes to the class.
        owner = (full or target).rpartition(".")[0] or node.get("py:class")
        if owner:
            owner = api_target(owner, node.get("py:module")) or owner
            return domain.resolve_xref(
                env, node["refdoc"], app.builder, "class", owner, node, contnode
            )
    return None


def _warn_missing_reference(app: Any, domain: Any, node: Any) -> bool | None:
    """Nitpicky about wsplugin's public API only (see is_api_reference) for
    references to classes, which annotations make too; references to
    attributes, methods and functions must all resolve."""
    if (
        node.get("refdomain") == "py"
        and node.get("reftype") in ("class", "obj")
        and not is_api_reference(node["reftarget"])
    ):
        return True  # handled: no warning
    return None


def _source_read(app: Any, docname: str, source: list[str]) -> None:
    text = include_examples(source[0])
    if docname == "index":
        text += "\n" + toctrees(text)
    source[0] = text


def setup(app: Any) -> dict[str, Any]:
    from docutils.statemachine import StringList
    from sphinx.util.docutils import SphinxDirective

    class WsModule(SphinxDirective):
        """``.. wsplugin-module:: NAME``: NAME's API (see plan_module)."""

        required_arguments = 1

        def run(self) -> list[Any]:
            from docutils import nodes

            rst = module_rst(plan_module(self.arguments[0]))
            node = nodes.section()
            node.document = self.state.document
            self.state.nested_parse(
                StringList(rst, source=self.get_source_info()[0]),
                self.content_offset,
                node,
            )
            return list(node.children)

    from pygments.lexer import RegexLexer, bygroups
    from pygments.token import Comment, Keyword, Name, Text

    class HAProxyLexer(RegexLexer):
        """haproxy.cfg: comments and section headers (Pygments has none)."""

        name = "HAProxy"
        aliases = ["haproxy"]
        tokens = {
            "root": [
                (r"#.*?$", Comment),
                (
                    r"^(global|defaults|frontend|backend|listen|resolvers|peers)\b(.*?)$",
                    bygroups(Keyword, Name.Namespace),
                ),
                (r"^(\s+)([\w.-]+)", bygroups(Text, Name.Builtin)),
                (r"[^\n#]+|\n", Text),
            ]
        }

    app.add_lexer("haproxy", HAProxyLexer)
    app.add_directive("wsplugin-module", WsModule)
    app.connect("source-read", _source_read)
    app.connect("autodoc-process-docstring", _keep_attribute_docstring, priority=400)
    app.connect("autodoc-process-docstring", _reparse_attribute_docstring, priority=600)
    app.connect("autodoc-process-signature", _signature)
    app.connect("missing-reference", _missing_reference)
    app.connect("warn-missing-reference", _warn_missing_reference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
