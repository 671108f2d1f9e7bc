"""List every registered component, the config groups that select it, and its knobs with defaults.

``python tools/list_components.py`` prints it as text; ``--format markdown`` writes the
component map of docs/components.md (a test checks that file is up to date).
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from typing import Any

from framework.config.groups import iter_groups
from framework.registry import ALL_REGISTRIES, CONFIG_SECTIONS, Knob, knobs
from framework.utils.cli import add_projects_flag, use_projects_flag

__all__ = ["describe", "describe_plugin_configs", "render_text", "render_markdown", "main"]


def _type_name(ann: Any) -> str:
    text = ann.__name__ if isinstance(ann, type) else str(ann)
    text = re.sub(r"typing\.|collections\.abc\.|framework\.[\w.]+\.", "", text)
    text = re.sub(r"Annotated\[Union\[str, Mapping\[str, Any\]\], Registry\((\w+)\)\]", r"Spec[\1]", text)
    text = re.sub(r"Annotated\[.*?<Registry.*?of (\w+).*?\]", r"Spec[\1]", text, flags=re.S)
    return text


def _spec_type(knob: Knob) -> str:
    if knob.registry is not None:
        name = f"Spec[{knob.registry._name}]"
        if knob.many:
            name = f"Sequence[{name}]"
        return f"Optional[{name}]" if knob.optional else name
    return _type_name(knob.annotation)


def _default(knob: Knob) -> str:
    if knob.default is inspect.Parameter.empty:
        return "(required)"
    value = knob.default
    if isinstance(value, tuple):
        value = list(value)
    return repr(value)


def _holders() -> dict[str, list[str]]:
    """Registry name -> where its components sit other than in its config groups: the knobs of the
    config sections, and the list knobs (``Sequence[Spec[R]]``) of components."""
    out: dict[str, list[str]] = {}
    for section, consumer in sorted(CONFIG_SECTIONS.items()):
        for k in knobs(consumer):
            if k.registry is not None:
                what = "a list, in order" if k.many else f"group `{k.registry.group}`"
                out.setdefault(k.registry._name, []).append(f"knob `{k.name}` of config section `{section}` ({what})")
    for reg_name, registry in ALL_REGISTRIES.items():
        for name, component in registry:
            for k in knobs(component):
                if k.registry is not None and k.many:
                    out.setdefault(k.registry._name, []).append(f"knob `{k.name}` of {reg_name} `{name}` (a list, in order)")
    return out


def describe() -> list[dict[str, Any]]:
    """One dict per registry: name, doc, config groups, where else its components are held, and
    its entries with their knobs."""
    groups_of: dict[str, list[str]] = {}
    for group, registry in iter_groups():
        groups_of.setdefault(registry._name, []).append(group)
    holders = _holders()
    out = []
    for reg_name, registry in ALL_REGISTRIES.items():
        entries = []
        for name, component in registry:
            doc = inspect.getdoc(component) or ""
            entries.append(
                {
                    "name": name,
                    "module": getattr(component, "__module__", "?"),
                    "summary": doc.split("\n\n")[0].replace("\n", " "),
                    "knobs": [(k.name, _spec_type(k), _default(k)) for k in knobs(component)],
                }
            )
        extra = [f"{k} (default {d!r})" for k, (_, d) in registry.extra_keys.items()]
        out.append(
            {"registry": reg_name, "doc": registry.doc, "groups": groups_of.get(reg_name, []),
             "held_by": holders.get(reg_name, []), "extra": extra, "entries": entries}
        )
    return out


def describe_plugin_configs() -> list[tuple[str, str, str]]:
    """``(option, plugin, file relative to the plugin folder)`` for every config a plugin ships."""
    from framework.config.plugin_configs import find_plugin_configs
    from framework.config.plugins import plugin_folders

    folders = plugin_folders()
    return [(c.option, c.plugin, c.path.relative_to(folders[c.plugin]).as_posix()) for c in find_plugin_configs(folders)]


def render_text(info: list[dict[str, Any]], plugin_configs: list[tuple[str, str, str]] = ()) -> str:
    lines = []
    for reg in info:
        groups = ", ".join(reg["groups"]) or "(no config group; built by code)"
        lines.append(f"{reg['registry']}: {reg['doc']}\n  config groups: {groups}")
        if reg["held_by"]:
            lines.append(f"  held by: {'; '.join(h.replace('`', '') for h in reg['held_by'])}")
        if reg["extra"]:
            lines.append(f"  every entry also takes: {', '.join(reg['extra'])}")
        for e in reg["entries"]:
            lines.append(f"  - {e['name']}  ({e['module']})")
            for name, typ, default in e["knobs"]:
                lines.append(f"      {name}: {typ} = {default}")
        lines.append("")
    if plugin_configs:
        lines.append("Config options shipped by plugins:")
        lines += [f"  {option}  (plugin {plugin}: {path})" for option, plugin, path in plugin_configs]
        lines.append("")
    return "\n".join(lines)


def render_markdown(info: list[dict[str, Any]], plugin_configs: list[tuple[str, str, str]] = ()) -> str:
    lines = [
        "# Components reference",
        "",
        "<!-- Generated by `python tools/list_components.py --format markdown > docs/components.md`;",
        "     tests/config/test_listing.py fails when it is out of date. Do not edit by hand. -->",
        "",
        "Every registered component, the Hydra config groups that select it, and its knobs (the",
        "keyword-only arguments of its constructor) with their defaults. Override a knob with its",
        "config path, e.g. `model.rpn.nms_thresh=0.6`; pick a component with its group, e.g.",
        "`model/roi_heads/mask_head=MaskRCNNConvUpsampleHead`.",
        "",
    ]
    for reg in info:
        lines.append(f"## {reg['registry']}")
        lines.append("")
        lines.append(reg["doc"].capitalize() + ".")
        lines.append("")
        if reg["groups"]:
            lines.append("Config groups: " + ", ".join(f"`{g}`" for g in reg["groups"]))
        elif reg["held_by"]:
            lines.append("Config groups: none.")
        else:
            lines.append("Config groups: none (built by code or configured under its own key).")
        lines.append("")
        if reg["held_by"]:
            lines.append("Held by: " + "; ".join(reg["held_by"]) + ".")
            lines.append("")
        if reg["extra"]:
            lines.append(f"Every entry also takes: {', '.join(reg['extra'])}.")
            lines.append("")
        for e in reg["entries"]:
            lines.append(f"### {e['name']}")
            lines.append("")
            lines.append(f"`{e['module']}`. {e['summary']}")
            lines.append("")
            if e["knobs"]:
                lines.append("| knob | type | default |")
                lines.append("|---|---|---|")
                for name, typ, default in e["knobs"]:
                    lines.append(f"| `{name}` | `{typ}` | `{default}` |".replace("|`", "| `"))
                lines.append("")
    if plugin_configs:
        lines += ["## Config options shipped by plugins", "", "| option | plugin | file |", "|---|---|---|"]
        lines += [f"| `{option}` | `{plugin}` | `{path}` |" for option, plugin, path in plugin_configs]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", choices=("text", "markdown"), default="text")
    parser.add_argument("--registry", help="only this registry (e.g. MASK_HEADS)")
    add_projects_flag(parser)
    args = parser.parse_args(argv)
    from framework.config.compose import setup
    from framework.errors import ConfigError

    try:
        use_projects_flag(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    setup()
    info = describe()
    plugin_configs = describe_plugin_configs()
    if args.registry:
        plugin_configs = []
        info = [r for r in info if r["registry"] == args.registry.upper()]
        if not info:
            from framework.errors import did_you_mean

            print(f"no registry {args.registry!r}.{did_you_mean(args.registry.upper(), ALL_REGISTRIES)}", file=sys.stderr)
            return 2
    render = render_markdown if args.format == "markdown" else render_text
    sys.stdout.write(render(info, plugin_configs))
    return 0

