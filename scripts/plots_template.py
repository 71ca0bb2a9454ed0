"""An HTML template for `dvc plots show/diff --html-template` that needs no network.

DVC's default page loads Vega, Vega-Lite and Vega-Embed from a CDN (dvc_render.vega's
SCRIPTS, put where the template says `{scripts}`). This template has no `{scripts}`
placeholder: it inlines the three minified builds from node_modules (the versions pinned in
package.json / package-lock.json) in <head>, before DVC's `{plot_divs}`, whose inline scripts
call `vegaEmbed('#id', spec)`. A Content-Security-Policy lets the page load nothing from
outside either (no script, style, font, image or data from another host).

    make plots-template          # npm ci --ignore-scripts, then this script
    python scripts/plots_template.py [--node-modules node_modules] [--out build/plots/template.html]

See docs/plots_offline.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

# (npm package, its UMD build, the global it defines); in load order: vega-lite and
# vega-embed read the globals `vega` and `vegaLite` when they load.
LIBRARIES = (
    ("vega", "build/vega.min.js", "vega"),
    ("vega-lite", "build/vega-lite.min.js", "vegaLite"),
    ("vega-embed", "build/vega-embed.min.js", "vegaEmbed"),
)

# The placeholders DVC fills (dvc_render.html.HTML.embed). `{plot_divs}` is required;
# `{scripts}` is left out on purpose: DVC would put its CDN <script src=...> tags there.
PLOTS_PLACEHOLDER = "{plot_divs}"
DVC_PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")

# vega compiles expressions with Function() ('unsafe-eval'); vega-embed adds inline styles;
# DVC's image plots are files beside the page or data: URLs; exports are data:/blob: URLs.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; "
    "style-src 'unsafe-inline'; img-src 'self' file: data: blob:; "
    "connect-src 'none'; font-src 'none'; form-action 'none'; base-uri 'none'"
)

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    <meta http-equiv="Content-Security-Policy" content="{csp}">
    {{refresh_tag}}
    <title>DVC Plot (offline)</title>
    <!-- {versions}: inlined from node_modules by scripts/plots_template.py -->
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""

_SOURCE_MAP = re.compile(r"^//# sourceMappingURL=\S+\s*$", re.MULTILINE)


class TemplateError(RuntimeError):
    pass


def read_library(node_modules: Path, package: str, build: str) -> tuple[str, str]:
    """The package's version and its minified build, checked safe to put in a <script>."""
    root = node_modules / package
    manifest = root / "package.json"
    path = root / build
    if not manifest.is_file() or not path.is_file():
        raise TemplateError(
            f"{path} is missing: run `npm ci --ignore-scripts` (or `make plots-template`) first"
        )
    version = json.loads(manifest.read_text(encoding="utf8"))["version"]
    code = _SOURCE_MAP.sub("", path.read_text(encoding="utf8")).rstrip()
    lowered = code.lower()
    # Inside <script>, "</script" ends the element and "<!--" changes how it is parsed.
    for bad in ("</script", "<!--"):
        if bad in lowered:
            raise TemplateError(f"{path} contains {bad!r}: it cannot be inlined in <script>")
    # DVC replaces these anywhere in the page, scripts included.
    for placeholder in DVC_PLACEHOLDERS:
        if placeholder in code:
            raise TemplateError(f"{path} contains DVC's placeholder {placeholder}")
    return version, code


def build_template(node_modules: Path) -> str:
    scripts, versions = [], []
    for package, build, global_name in LIBRARIES:
        version, code = read_library(node_modules, package, build)
        versions.append(f"{package}@{version}")
        scripts.append(
            f"    <script>/* {package}@{version} ({build}, defines {global_name}) */\n"
            f"{code}\n    </script>"
        )
    page = PAGE.format(csp=CSP, versions=", ".join(versions), scripts="\n".join(scripts))
    if page.count(PLOTS_PLACEHOLDER) != 1 or "{scripts}" in page:
        raise TemplateError("the template must hold {plot_divs} once and no {scripts}")
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node-modules", type=Path, default=Path("node_modules"))
    parser.add_argument("--out", type=Path, default=Path("build/plots/template.html"))
    args = parser.parse_args(argv)
    try:
        page = build_template(args.node_modules)
    except TemplateError as err:
        print(f"plots_template: {err}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(page, encoding="utf8")
    os.replace(tmp, args.out)
    print(f"plots_template: wrote {args.out} ({len(page) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
