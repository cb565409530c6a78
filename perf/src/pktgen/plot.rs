//! SVG charts of results, written next to their JSON: a bar chart (with each bar's
//! spread) and a latency CDF on a logarithmic axis. Plain SVG 1.1 text that any
//! browser shows; no plotting library needed for two chart kinds.

use std::fmt::Write;

const W: f64 = 760.0;
const H: f64 = 420.0;
const LEFT: f64 = 200.0;
const RIGHT: f64 = 40.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const COLOURS: [&str; 6] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn open(out: &mut String, title: &str, height: f64) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{height}\" font-family=\"sans-serif\" \
         font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
        W / 2.0,
        escape(title)
    );
}

/// A "nice" axis maximum at or above `v` (1, 2 or 5 times a power of ten).
fn nice(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * p).find(|&x| x >= v).unwrap_or(10.0 * p)
}

/// One bar: label, value (the median) and its spread (lowest, highest).
#[derive(Debug, Clone)]
pub struct Bar {
    /// What the bar is.
    pub label: String,
    /// Its value.
    pub value: f64,
    /// Lowest and highest of the rounds.
    pub spread: (f64, f64),
}

/// Horizontal bars, one per row, with whiskers for the spread.
pub fn bars(title: &str, unit: &str, bars: &[Bar]) -> String {
    let row = 28.0;
    let height = TOP + BOTTOM + row * bars.len().max(1) as f64;
    let max = nice(bars.iter().map(|b| b.value.max(b.spread.1)).fold(0.0, f64::max));
    let x = |v: f64| LEFT + (W - LEFT - RIGHT) * v / max;
    let mut s = String::new();
    open(&mut s, title, height);
    for i in 0..=5 {
        let v = max * f64::from(i) / 5.0;
        let _ = writeln!(
            s,
            "<line x1=\"{0:.1}\" y1=\"{TOP}\" x2=\"{0:.1}\" y2=\"{1:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{0:.1}\" y=\"{2:.1}\" text-anchor=\"middle\">{3}</text>",
            x(v),
            height - BOTTOM,
            height - BOTTOM + 16.0,
            trim(v)
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
        x(max / 2.0),
        height - 14.0,
        escape(unit)
    );
    for (i, b) in bars.iter().enumerate() {
        let y = TOP + row * i as f64 + 4.0;
        let (bar_h, text_y) = (row - 8.0, y + 14.0);
        let mid = y + bar_h / 2.0;
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{text_y:.1}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{LEFT}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bar_h:.1}\" fill=\"{}\"/>\
             <line x1=\"{:.1}\" y1=\"{mid:.1}\" x2=\"{:.1}\" y2=\"{mid:.1}\" stroke=\"black\"/>\
             <text x=\"{:.1}\" y=\"{text_y:.1}\">{}</text>",
            LEFT - 8.0,
            escape(&b.label),
            (x(b.value) - LEFT).max(0.0),
            COLOURS[i % COLOURS.len()],
            x(b.spread.0),
            x(b.spread.1),
            x(b.value.max(b.spread.1)) + 4.0,
            trim(b.value),
        );
    }
    s.push_str("</svg>\n");
    s
}

fn trim(v: f64) -> String {
    let t = format!("{v:.3}");
    t.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Latency CDFs, one line per series: x is latency (log scale, ns), y the fraction of
/// frames at or below it.
pub fn cdf(title: &str, series: &[(String, Vec<(u64, f64)>)]) -> String {
    let height = H;
    let (lo, hi) = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(x, _)| x.max(1) as f64))
        .fold((f64::MAX, 1.0f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let (lo, hi) = if lo > hi {
        (1.0, 10.0)
    } else {
        (10f64.powf(lo.log10().floor()), 10f64.powf(hi.log10().ceil().max(lo.log10().floor() + 1.0)))
    };
    let x = |v: f64| LEFT + (W - LEFT - RIGHT) * (v.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10());
    let y = |f: f64| height - BOTTOM - (height - TOP - BOTTOM) * f;
    let mut s = String::new();
    open(&mut s, title, height);
    let mut d = lo;
    while d <= hi * 1.0001 {
        let label = if d >= 1e6 {
            format!("{} ms", trim(d / 1e6))
        } else if d >= 1e3 {
            format!("{} µs", trim(d / 1e3))
        } else {
            format!("{} ns", trim(d))
        };
        let _ = writeln!(
            s,
            "<line x1=\"{0:.1}\" y1=\"{TOP}\" x2=\"{0:.1}\" y2=\"{1:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{0:.1}\" y=\"{2:.1}\" text-anchor=\"middle\">{3}</text>",
            x(d),
            height - BOTTOM,
            height - BOTTOM + 16.0,
            label
        );
        d *= 10.0;
    }
    for f in [0.0, 0.5, 0.9, 0.99, 1.0] {
        let _ = writeln!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\" stroke=\"#eee\"/>\
             <text x=\"{2:.1}\" y=\"{3:.1}\" text-anchor=\"end\">{f}</text>",
            y(f),
            W - RIGHT,
            LEFT - 6.0,
            y(f) + 4.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">latency</text>",
        (LEFT + W - RIGHT) / 2.0,
        height - 14.0
    );
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut path = String::new();
        let mut prev = 0.0;
        for &(ns, frac) in points {
            // A step: up at each bucket's bound.
            let _ = write!(
                path,
                "{}{:.1},{:.1} {:.1},{:.1} ",
                if path.is_empty() { "M" } else { "L" },
                x(ns as f64),
                y(prev),
                x(ns as f64),
                y(frac)
            );
            prev = frac;
        }
        let _ = writeln!(
            s,
            "<path d=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"{colour}\">{}</text>",
            path.trim_end(),
            LEFT + 10.0,
            TOP + 16.0 * (i as f64 + 1.0),
            escape(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_well_formed_svg_with_every_series() {
        let b = bars(
            "64-byte frames",
            "Mpps",
            &[
                Bar { label: "podswitchd <L2>".into(), value: 0.9, spread: (0.85, 0.95) },
                Bar { label: "bridge".into(), value: 0.5, spread: (0.5, 0.5) },
            ],
        );
        assert!(b.starts_with("<svg") && b.trim_end().ends_with("</svg>"));
        assert!(b.contains("podswitchd &lt;L2&gt;") && b.contains("bridge"));
        assert_eq!(b.matches("<rect").count(), 3, "background and two bars");
        let c = cdf("latency", &[("10% of NDR".into(), vec![(1024, 0.5), (4096, 1.0)])]);
        assert!(c.contains("10% of NDR") && c.contains("<path d=\"M"));
        assert!(c.contains("µs"), "axis in µs around 1-4 µs");
        assert_eq!(nice(0.93), 1.0);
        assert_eq!(nice(13.0), 20.0);
    }
}
