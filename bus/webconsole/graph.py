"""The graph of routes as an SVG drawn on the server (what ``ironbus graph`` prints as Mermaid): event types
and targets in layers from left to right, an edge per route, a dashed edge per follow-up event emitted."""

from __future__ import annotations

from html import escape

from bus.config import Config

__all__ = ["route_graph"]

_W, _H, _GAP_X, _GAP_Y = 200, 34, 90, 22


def route_graph(config: Config) -> str:
    edges: list[tuple[str, str, str, bool]] = []  # (from, to, label, dashed)
    kinds: dict[str, str] = {}
    for route in config.routes:
        kinds.setdefault(route.source, "event")
        for target in route.targets:
            node = f"{target.system}.{target.operation}"
            kinds[node] = "target"
            edges.append((route.source, node, route.name + (" (shadow)" if route.mode == "shadow" else ""),
                          False))
            if target.emit:
                kinds.setdefault(target.emit, "event")
                edges.append((node, target.emit, "emits", True))
    if not kinds:
        return ""
    layer = {name: 0 for name in kinds}
    for _ in range(len(kinds)):  # longest path from the sources; cycles stop after len(kinds) rounds
        changed = False
        for a, b, _, _ in edges:
            if layer[b] < layer[a] + 1 and layer[a] + 1 < len(kinds):
                layer[b] = layer[a] + 1
                changed = True
        if not changed:
            break
    columns: dict[int, list[str]] = {}
    for name in kinds:
        columns.setdefault(layer[name], []).append(name)
    pos: dict[str, tuple[int, int]] = {}
    for col, names in columns.items():
        for row, name in enumerate(sorted(names)):
            pos[name] = (10 + col * (_W + _GAP_X), 10 + row * (_H + _GAP_Y))
    width = max(x for x, _ in pos.values()) + _W + 10
    height = max(y for _, y in pos.values()) + _H + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" aria-label="graph of routes">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>']
    for a, b, label, dashed in edges:
        (x1, y1), (x2, y2) = pos[a], pos[b]
        sx, sy, ex, ey = x1 + _W, y1 + _H // 2, x2, y2 + _H // 2
        mid = (sx + ex) // 2
        dash = ' stroke-dasharray="5,4"' if dashed else ""
        parts.append(f'<path class="edge" d="M{sx},{sy} C{mid},{sy} {mid},{ey} {ex},{ey}" fill="none"{dash} '
                     'marker-end="url(#arrow)"/>')
        parts.append(f'<text class="edge-label" x="{mid}" y="{(sy + ey) // 2 - 4}" text-anchor="middle">'
                     f'{escape(label)}</text>')
    for name, (x, y) in pos.items():
        radius = 17 if kinds[name] == "event" else 4
        parts.append(f'<rect class="node {kinds[name]}" x="{x}" y="{y}" width="{_W}" height="{_H}" rx="{radius}"/>')
        parts.append(f'<text class="node-label" x="{x + _W // 2}" y="{y + _H // 2 + 4}" text-anchor="middle">'
                     f'{escape(name if len(name) <= 30 else name[:28] + "…")}</text>')
    parts.append("</svg>")
    return "".join(parts)
