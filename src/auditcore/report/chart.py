"""The activity chart: stacked bars per time bucket, as inline SVG (no scripts, no fonts to
fetch), so the report stays one self-contained file. Every bucket of the period has its
place and its title (``… UTC: 0 events`` for an empty one): a quiet hour shows as a gap,
never as a missing hour. A period of years in days would be thousands of hairline bars: the
days are then taken a few at a time, at most ``MAX_BARS`` bars (the heading says how many)."""

from __future__ import annotations

from datetime import datetime, timedelta
from html import escape
from math import ceil

from auditcore.readmodel.queries import Stats

STEPS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}
MAX_BARS = 750
"""Above every minute of 6 hours and every hour of 30 days (``stats``'s automatic intervals)."""

PALETTE = ("#0b5cad", "#e07b00", "#2a9d4b", "#b0306a", "#6a4fb3", "#9aa3ad")
WIDTH, HEIGHT = 920, 260
LEFT, BOTTOM, TOP = 48, 34, 12


def activity_svg(stats: Stats, series: int = 5) -> str:
    """Events per bucket, the ``series`` busiest keys stacked and the rest as "other"."""
    totals: dict[str, int] = {}
    for bucket in stats.buckets:
        totals[bucket.key] = totals.get(bucket.key, 0) + bucket.events
    leaders = sorted(totals, key=lambda key: (-totals[key], key))[:series]
    moments = bucket_starts(stats)
    width = bucket_width(stats)
    stacks: dict[datetime, dict[str, int]] = {moment: {} for moment in moments}
    for bucket in stats.buckets:
        key = bucket.key if bucket.key in leaders else "other"
        stack = stacks[stats.since + (bucket.bucket - stats.since) // width * width]
        stack[key] = stack.get(key, 0) + bucket.events
    keys = leaders + (["other"] if len(totals) > len(leaders) else [])
    peak = max((sum(stack.values()) for stack in stacks.values()), default=0) or 1
    plot_width, plot_height = WIDTH - LEFT - 10, HEIGHT - BOTTOM - TOP
    step = plot_width / max(len(moments), 1)
    bar = max(step * 0.8, 1.0)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT + 24}" '
        f'role="img" aria-label="Events per {bucket_name(stats)}, by {stats.group_by}">',
        f'<line x1="{LEFT}" y1="{TOP + plot_height}" x2="{WIDTH - 10}" '
        f'y2="{TOP + plot_height}" stroke="#9aa3ad"/>',
        f'<text x="{LEFT - 6}" y="{TOP + 8}" text-anchor="end" font-size="11">{peak}</text>',
        f'<text x="{LEFT - 6}" y="{TOP + plot_height}" text-anchor="end" font-size="11">0</text>',
    ]
    fmt = "%m-%d" if stats.interval == "day" else "%m-%d %H:%M"
    # Every bucket has its bar, not its label: labels (about 7 px a character) never overlap.
    label_every = ceil((len(datetime.min.strftime(fmt)) * 7 + 12) / step)
    for index, moment in enumerate(moments):
        x = LEFT + index * step + (step - bar) / 2
        y = float(TOP + plot_height)
        parts.append(
            f'<g class="bucket"><title>{moment.strftime("%Y-%m-%d %H:%M")} UTC: '
            f"{sum(stacks[moment].values()):,} events</title>"
        )
        for key_index, key in enumerate(keys):
            count = stacks[moment].get(key, 0)
            if not count:
                continue
            height = count / peak * plot_height
            y -= height
            colour = PALETTE[min(key_index, len(PALETTE) - 1)]
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{height:.1f}" '
                f'fill="{colour}"><title>{escape(key)}: {count}</title></rect>'
            )
        parts.append("</g>")
        if index % label_every == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{TOP + plot_height + 16}" font-size="11" '
                f'text-anchor="middle">{moment.strftime(fmt)}</text>'
            )
    legend_x = LEFT
    for key_index, key in enumerate(keys):
        colour = PALETTE[min(key_index, len(PALETTE) - 1)]
        parts.append(
            f'<rect x="{legend_x}" y="{HEIGHT + 8}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{legend_x + 14}" y="{HEIGHT + 17}" font-size="11">{escape(key)}</text>'
        )
        legend_x += 20 + 7 * len(key)
    parts.append("</svg>")
    return "".join(parts)


def bucket_width(stats: Stats) -> timedelta:
    """The interval, or as many of them as keep the chart to ``MAX_BARS`` bars."""
    step = STEPS[stats.interval]
    return step * max(1, ceil((stats.until - stats.since) / step / MAX_BARS))


def bucket_name(stats: Stats) -> str:
    """``hour``, or ``3 days`` when days are taken together."""
    width = bucket_width(stats)
    if width == STEPS[stats.interval]:
        return stats.interval
    return f"{width // STEPS[stats.interval]} {stats.interval}s"


def bucket_starts(stats: Stats) -> list[datetime]:
    """The start of every bar's bucket in [since, until), with events or not."""
    width = bucket_width(stats)
    return [
        stats.since + index * width for index in range(ceil((stats.until - stats.since) / width))
    ]
