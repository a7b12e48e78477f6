//! A [`Timeline`] → SVG text, written by hand: one group per pool, one lane per replica in
//! it, a bar per hold coloured by replica and labelled with its fencing token, the waits
//! before them dashed, freezes hatched, refused writes as red crosses.
//!
//! Elements carry `data-` attributes (pool, replica, token) so that tests can read the
//! picture without parsing geometry.

use std::fmt::Write;

use super::build::{Hold, Rejection, Timeline};

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 150.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 66.0;
const POOL_HEAD: f64 = 24.0;
const LANE: f64 = 36.0;
/// Bar top and height within a lane; the token label sits above the bar.
const BAR_Y: f64 = 15.0;
const BAR_H: f64 = 14.0;
const CHAR_W: f64 = 6.4;
const RED: &str = "#d62728";
const PALETTE: [&str; 8] =
    ["#4e79a7", "#59a14f", "#f28e2b", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#bab0ac"];

/// The whole picture.
pub fn render(t: &Timeline) -> String {
    let Some((first, last)) = t.span() else {
        return empty();
    };
    let lanes = t.pools.len() * t.replicas.len();
    let plot_bottom = TOP + t.pools.len() as f64 * POOL_HEAD + lanes as f64 * LANE;
    let scale = Scale::new(first, last);
    let mut body = String::new();
    let _ = writeln!(
        body,
        r##"<text x="16" y="24" font-size="16" font-weight="bold">Which replica held which pool's lock, and when</text>"##
    );
    let _ = writeln!(
        body,
        r##"<text x="16" y="44" fill="#555">t = 0 at {} · bars from acquiring a lock to releasing or losing it, labelled with the fencing token</text>"##,
        clock(first)
    );
    grid(&mut body, &scale, plot_bottom);
    let mut y = TOP;
    for (pool, backend) in &t.pools {
        let backend = backend.as_deref().map(backend_name).unwrap_or_default();
        let _ = writeln!(
            body,
            r##"<rect x="0" y="{y}" width="{WIDTH}" height="{POOL_HEAD}" fill="#eef0f3"/><text x="16" y="{}" font-weight="bold">pool {}</text><text x="{}" y="{}" fill="#555">{}</text>"##,
            y + 16.0,
            esc(pool),
            16.0 + (pool.len() + 6) as f64 * 7.2,
            y + 16.0,
            esc(&backend)
        );
        y += POOL_HEAD;
        for (r, replica) in t.replicas.iter().enumerate() {
            lane(&mut body, t, &scale, pool, replica, PALETTE[r % PALETTE.len()], y);
            y += LANE;
        }
    }
    axis(&mut body, &scale, plot_bottom);
    let mut y = legend(&mut body, t, plot_bottom + 40.0) + 8.0;
    for note in notes(t).iter().flat_map(|n| wrap(n, ((WIDTH - 32.0) / CHAR_W) as usize)) {
        y += 16.0;
        let _ = writeln!(body, r##"<text x="16" y="{y}" fill="#333">{}</text>"##, esc(&note));
    }
    let height = y + 14.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">"##
    );
    svg.push_str(concat!(
        r##"<defs><pattern id="frozen" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">"##,
        r##"<rect width="6" height="6" fill="#ffffff" fill-opacity="0.35"/><line x1="0" y1="0" x2="0" y2="6" stroke="#555" stroke-width="2"/></pattern></defs>"##,
        "\n"
    ));
    let _ = writeln!(svg, r##"<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>"##);
    svg.push_str(&body);
    svg.push_str("</svg>\n");
    svg
}

/// Splits `text` into lines of at most `width` characters at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split(' ') {
        let line = lines.last_mut().expect("one line");
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(word.to_string());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

fn empty() -> String {
    concat!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="600" height="60" viewBox="0 0 600 60" font-family="sans-serif" font-size="13">"##,
        r##"<rect width="600" height="60" fill="#ffffff"/><text x="16" y="34">No lock events in these logs.</text></svg>"##,
        "\n"
    )
    .to_string()
}

/// Time (µs since the epoch) → x, over the span plus a margin; labels count from `origin`.
struct Scale {
    origin: i64,
    from: i64,
    to: i64,
}

impl Scale {
    fn new(first: i64, last: i64) -> Self {
        let pad = ((last - first) / 30).max(50_000);
        Self { origin: first, from: first - pad, to: last + pad }
    }

    fn seconds(&self, us: i64) -> f64 {
        (us - self.origin) as f64 / 1e6
    }

    fn x(&self, us: i64) -> f64 {
        LEFT + (us - self.from) as f64 / (self.to - self.from) as f64 * (WIDTH - LEFT - RIGHT)
    }

    /// Tick step in µs: at most about 12 ticks.
    fn step(&self) -> i64 {
        const STEPS_MS: [i64; 14] =
            [10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 30_000, 60_000, 300_000, 600_000];
        let span = self.to - self.from;
        let ms = STEPS_MS.iter().copied().find(|s| span / (s * 1000) <= 12).unwrap_or(3_600_000);
        ms * 1000
    }
}

fn grid(svg: &mut String, scale: &Scale, bottom: f64) {
    let step = scale.step();
    let mut t = scale.origin;
    while t <= scale.to {
        let x = scale.x(t);
        let _ =
            writeln!(svg, r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{bottom}" stroke="#e6e6e6"/>"##);
        t += step;
    }
}

fn axis(svg: &mut String, scale: &Scale, bottom: f64) {
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{bottom}" x2="{}" y2="{bottom}" stroke="#333"/>"##,
        WIDTH - RIGHT
    );
    let step = scale.step();
    let mut t = scale.origin;
    while t <= scale.to {
        let x = scale.x(t);
        let seconds = (t - scale.origin) as f64 / 1e6;
        let label = if step >= 1_000_000 { format!("{seconds:.0} s") } else { format!("{seconds:.1} s") };
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{bottom}" x2="{x:.1}" y2="{}" stroke="#333"/><text x="{x:.1}" y="{}" text-anchor="middle" fill="#333">{label}</text>"##,
            bottom + 4.0,
            bottom + 17.0
        );
        t += step;
    }
}

/// One replica's lane in one pool: its waits, holds, freezes and refused writes.
fn lane(svg: &mut String, t: &Timeline, scale: &Scale, pool: &str, replica: &str, colour: &str, y: f64) {
    let _ = writeln!(svg, r##"<g class="lane" data-pool="{}" data-replica="{}">"##, esc(pool), esc(replica));
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="{}" text-anchor="end" fill="{colour}" font-weight="bold">{}</text><line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="#f0f0f0"/>"##,
        LEFT - 10.0,
        y + BAR_Y + 11.0,
        esc(replica),
        y + LANE,
        WIDTH - RIGHT,
        y + LANE
    );
    let holds: Vec<&Hold> = t.holds.iter().filter(|h| h.pool == pool && h.replica == replica).collect();
    let mid = y + BAR_Y + BAR_H / 2.0;
    for h in &holds {
        if let Some(from) = h.waited_from_us.filter(|&w| w < h.start_us) {
            let _ = writeln!(
                svg,
                r##"<line class="wait" x1="{:.1}" y1="{mid}" x2="{:.1}" y2="{mid}" stroke="{colour}" stroke-width="1.5" stroke-dasharray="3 3" opacity="0.7"><title>{} waited {:.2} s for the lock of {}</title></line>"##,
                scale.x(from),
                scale.x(h.start_us),
                esc(replica),
                (h.start_us - from) as f64 / 1e6,
                esc(pool)
            );
        }
    }
    let mut label_end = f64::MIN;
    for h in &holds {
        label_end = bar(svg, scale, h, colour, y, label_end);
    }
    for f in t.freezes.iter().filter(|f| f.replica == replica) {
        let (x1, x2) = (scale.x(f.from_us), scale.x(f.to_us));
        let seconds = (f.to_us - f.from_us) as f64 / 1e6;
        let _ = writeln!(
            svg,
            r##"<rect class="frozen" x="{x1:.1}" y="{}" width="{:.1}" height="{}" fill="url(#frozen)" stroke="#555" stroke-width="0.5"><title>{} frozen (SIGSTOP) for {seconds:.1} s</title></rect>"##,
            y + BAR_Y - 3.0,
            (x2 - x1).max(1.0),
            BAR_H + 6.0,
            esc(replica)
        );
        let text = format!("{replica} frozen (SIGSTOP) {seconds:.1} s");
        if x2 - x1 > text.len() as f64 * CHAR_W + 8.0 {
            let _ = writeln!(
                svg,
                r##"<text x="{:.1}" y="{}" text-anchor="middle" font-size="11" font-weight="bold" fill="#222" stroke="#ffffff" stroke-width="4" paint-order="stroke">{}</text>"##,
                (x1 + x2) / 2.0,
                mid + 4.0,
                esc(&text)
            );
        }
    }
    for r in t.rejections.iter().filter(|r| r.pool == pool && r.replica == replica) {
        split_brain(svg, t, scale, r, y);
        let x = scale.x(r.at_us);
        let text = match r.newer {
            Some(newer) => format!("fenced write rejected, token {} < {newer}", r.token),
            None => format!("fenced write rejected, token {}", r.token),
        };
        // Right of the cross, or else above the bar, ending at the cross (the bar's middle
        // carries the freeze's label).
        let fits_right = x + 10.0 + text.len() as f64 * CHAR_W <= WIDTH - 4.0;
        let (tx, ty, anchor) =
            if fits_right { (x + 10.0, mid + 4.0, "start") } else { (x + 6.0, y + BAR_Y - 3.0, "end") };
        let newer = r.newer.map(|n| format!(r#" data-newer="{n}""#)).unwrap_or_default();
        let _ = writeln!(
            svg,
            r##"<g class="rejected" data-pool="{}" data-replica="{}" data-token="{}"{newer}><title>{}: {}</title><path d="M{:.1},{:.1} l10,10 M{:.1},{:.1} l-10,10" stroke="{RED}" stroke-width="3" stroke-linecap="round"/><text x="{tx:.1}" y="{ty:.1}" text-anchor="{anchor}" font-weight="bold" fill="{RED}" stroke="#ffffff" stroke-width="4" paint-order="stroke">{}</text></g>"##,
            esc(pool),
            esc(replica),
            r.token,
            esc(&text),
            esc(r.by.as_deref().unwrap_or("refused by the API server")),
            x - 5.0,
            mid - 5.0,
            x + 5.0,
            mid - 5.0,
            esc(&text)
        );
    }
    svg.push_str("</g>\n");
}

/// Behind a refused write: from when the newer holder got the lock until the stale one
/// noticed its loss (or was refused), both took themselves for the holder.
fn split_brain(svg: &mut String, t: &Timeline, scale: &Scale, r: &Rejection, y: f64) {
    let newer = t.holds.iter().find(|h| {
        h.pool == r.pool && Some(&h.replica) == r.newer_by.as_ref() && h.token.is_some() && h.token == r.newer
    });
    let Some(newer) = newer else { return };
    let stale =
        t.holds.iter().find(|h| h.pool == r.pool && h.replica == r.replica && h.token == Some(r.token));
    let until = stale.and_then(|h| h.lost_at_us).unwrap_or(r.at_us).min(r.at_us);
    if until <= newer.start_us {
        return;
    }
    let (x1, x2) = (scale.x(newer.start_us), scale.x(until));
    let _ = writeln!(
        svg,
        r##"<rect class="split-brain" x="{x1:.1}" y="{}" width="{:.1}" height="{}" fill="{RED}" fill-opacity="0.16"><title>split brain: {} held token {} while {} still took itself for the holder with token {}</title></rect>"##,
        y + 2.0,
        x2 - x1,
        LANE - 4.0,
        esc(&newer.replica),
        newer.token.unwrap_or_default(),
        esc(&r.replica),
        r.token
    );
}

/// One hold: its bar, its ledger writes, its token; returns where its label ends.
fn bar(svg: &mut String, scale: &Scale, h: &Hold, colour: &str, y: f64, label_end: f64) -> f64 {
    let x1 = scale.x(h.start_us);
    let w = (scale.x(h.end_us) - x1).max(3.0);
    let token = h.token.map_or_else(|| "?".to_string(), |t| t.to_string());
    let lost = h.lost_at_us.is_some();
    let outline = if lost {
        format!(r##" stroke="{RED}" stroke-width="1.5" stroke-dasharray="4 2""##)
    } else {
        String::new()
    };
    let mut title = format!(
        "{} held {} with token {token} from {:.3} s to {:.3} s",
        h.replica,
        h.pool,
        scale.seconds(h.start_us),
        scale.seconds(h.end_us)
    );
    if !h.start_known {
        title.push_str(" (acquired earlier; the logs do not say when)");
    }
    if let Some(at) = h.lost_at_us {
        let _ = write!(title, "; noticed the lock lost at {:.3} s", scale.seconds(at));
    }
    let _ = writeln!(
        svg,
        r##"<rect class="hold" data-pool="{}" data-replica="{}" data-token="{token}" x="{x1:.1}" y="{}" width="{w:.1}" height="{BAR_H}" rx="2" fill="{colour}"{outline}><title>{}</title></rect>"##,
        esc(&h.pool),
        esc(&h.replica),
        y + BAR_Y,
        esc(&title)
    );
    let mid = y + BAR_Y + BAR_H / 2.0;
    if !h.start_known {
        let _ = writeln!(
            svg,
            r##"<line x1="{:.1}" y1="{mid}" x2="{x1:.1}" y2="{mid}" stroke="{colour}" stroke-width="3" stroke-dasharray="1 3"/>"##,
            x1 - 18.0
        );
    }
    for &at in &h.writes_us {
        let x = scale.x(at);
        let _ = writeln!(
            svg,
            r##"<line class="write" x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#111" stroke-width="1.5"/>"##,
            y + BAR_Y - 2.0,
            y + BAR_Y + BAR_H + 2.0
        );
    }
    let long = if lost { format!("token {token} · lost") } else { format!("token {token}") };
    let text = if x1 >= label_end + 4.0 { long } else { token };
    let tx = x1.max(label_end + 4.0);
    let _ = writeln!(
        svg,
        r##"<text x="{tx:.1}" y="{}" font-size="11" fill="#222">{}</text>"##,
        y + BAR_Y - 3.0,
        esc(&text)
    );
    tx + text.chars().count() as f64 * 6.0
}

/// The replicas' colours and the marks, flowed into rows from `y`; returns the last row's y.
fn legend(svg: &mut String, t: &Timeline, y: f64) -> f64 {
    let mut items: Vec<(String, String)> = t
        .replicas
        .iter()
        .enumerate()
        .map(|(r, replica)| {
            let colour = PALETTE[r % PALETTE.len()];
            (
                replica.clone(),
                format!(r##"<rect x="0" y="-9" width="22" height="10" rx="2" fill="{colour}"/>"##),
            )
        })
        .collect();
    let marks = [
        ("waiting for the lock", r##"<line x1="0" y1="-4" x2="22" y2="-4" stroke="#666" stroke-width="1.5" stroke-dasharray="3 3"/>"##.to_string()),
        ("ledger written", r##"<rect x="0" y="-9" width="22" height="10" fill="#bbb"/><line x1="11" y1="-11" x2="11" y2="3" stroke="#111" stroke-width="1.5"/>"##.to_string()),
        ("lock lost while held", format!(r##"<rect x="0" y="-9" width="22" height="10" fill="#bbb" stroke="{RED}" stroke-width="1.5" stroke-dasharray="4 2"/>"##)),
        ("acquired earlier, not logged", r##"<line x1="0" y1="-4" x2="22" y2="-4" stroke="#888" stroke-width="3" stroke-dasharray="1 3"/>"##.to_string()),
        ("frozen (SIGSTOP)", r##"<rect x="0" y="-9" width="22" height="10" fill="url(#frozen)" stroke="#555" stroke-width="0.5"/>"##.to_string()),
        ("split brain: both take themselves for the holder", format!(r##"<rect x="0" y="-11" width="22" height="14" fill="{RED}" fill-opacity="0.16"/>"##)),
        ("write refused by the fence", format!(r##"<path d="M6,-9 l10,10 M16,-9 l-10,10" stroke="{RED}" stroke-width="3" stroke-linecap="round"/>"##)),
    ];
    items.extend(marks.into_iter().map(|(label, mark)| (label.to_string(), mark)));
    let (mut x, mut y) = (16.0, y);
    for (label, mark) in items {
        let width = 28.0 + label.len() as f64 * CHAR_W + 16.0;
        if x > 16.0 && x + width > WIDTH - 8.0 {
            (x, y) = (16.0, y + 20.0);
        }
        let _ = writeln!(
            svg,
            r##"<g transform="translate({x},{y})">{mark}<text x="28" y="0">{}</text></g>"##,
            esc(&label)
        );
        x += width;
    }
    y
}

/// The story in words: one line per refused write, and how to read the bars.
fn notes(t: &Timeline) -> Vec<String> {
    let mut notes = Vec::new();
    for r in &t.rejections {
        let frozen = t
            .freezes
            .iter()
            .filter(|f| f.replica == r.replica && f.to_us <= r.at_us)
            .max_by_key(|f| f.to_us)
            .map(|f| format!(", thawed after a freeze of {:.1} s,", (f.to_us - f.from_us) as f64 / 1e6))
            .unwrap_or_default();
        let by = r.by.as_deref().map(|b| format!(" (by its {b})")).unwrap_or_default();
        let newer = match (r.newer, &r.newer_by) {
            (Some(n), Some(who)) => format!(": {who} had taken the lock with token {n}"),
            (Some(n), None) => format!(": the lock had been taken with token {n}"),
            _ => String::new(),
        };
        notes.push(format!(
            "{}{frozen} wrote the ledger of {} with token {}; the API server refused it{by}{newer}.",
            r.replica, r.pool, r.token
        ));
    }
    if t.holds.iter().any(|h| !h.released) {
        notes.push(
            "Bars without a release line in the logs end at their last line (the ledger write, the refusal)."
                .into(),
        );
    }
    notes
}

fn backend_name(backend: &str) -> String {
    match backend {
        "etcd" => "etcd lease lock".into(),
        "lease" => "Kubernetes Lease".into(),
        other => other.into(),
    }
}

/// `2026-11-29 03:27:20.383 UTC`.
fn clock(us: i64) -> String {
    jiff::Timestamp::from_microsecond(us)
        .map_or_else(|_| us.to_string(), |t| t.strftime("%Y-%m-%d %H:%M:%S%.3f UTC").to_string())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::super::build::{Freeze, Rejection};
    use super::*;

    fn hold(pool: &str, replica: &str, token: u64, start_s: f64, end_s: f64) -> Hold {
        Hold {
            pool: pool.into(),
            replica: replica.into(),
            token: Some(token),
            start_us: (start_s * 1e6) as i64,
            start_known: true,
            end_us: (end_s * 1e6) as i64,
            waited_from_us: None,
            lost_at_us: None,
            released: true,
            writes_us: vec![],
        }
    }

    fn demo() -> Timeline {
        let mut stale = hold("demo-ports", "replica-2", 2, 0.0, 8.5);
        stale.start_known = false;
        stale.lost_at_us = Some(8_460_000);
        stale.released = false;
        let mut newer = hold("demo-ports", "replica-1", 6, 5.3, 5.4);
        newer.waited_from_us = Some(300_000);
        newer.writes_us = vec![5_400_000];
        Timeline {
            holds: vec![newer, stale, hold("demo-vlans", "replica-1", 3, 5.1, 5.12)],
            freezes: vec![Freeze { replica: "replica-2".into(), from_us: 0, to_us: 8_460_000 }],
            rejections: vec![Rejection {
                pool: "demo-ports".into(),
                replica: "replica-2".into(),
                at_us: 8_500_000,
                token: 2,
                newer: Some(6),
                newer_by: Some("replica-1".into()),
                by: Some("resourceVersion precondition".into()),
            }],
            replicas: vec!["replica-0".into(), "replica-1".into(), "replica-2".into()],
            pools: vec![
                ("demo-ports".into(), Some("etcd".into())),
                ("demo-vlans".into(), Some("lease".into())),
            ],
        }
    }

    #[test]
    fn the_picture_has_its_lanes_bars_and_marks() {
        let svg = render(&demo());
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<svg").count(), 1);
        for expected in [
            r#"class="lane" data-pool="demo-ports" data-replica="replica-0""#, // empty lanes too
            r#"class="lane" data-pool="demo-vlans" data-replica="replica-2""#,
            r#"class="hold" data-pool="demo-ports" data-replica="replica-2" data-token="2""#,
            r#"class="hold" data-pool="demo-ports" data-replica="replica-1" data-token="6""#,
            r#"class="rejected" data-pool="demo-ports" data-replica="replica-2" data-token="2" data-newer="6""#,
            "fenced write rejected, token 2 &lt; 6",
            "token 2 · lost",
            r#"class="frozen""#,
            "replica-2 frozen (SIGSTOP) 8.5 s",
            r#"class="wait""#,
            r#"class="write""#,
            "pool demo-ports",
            "etcd lease lock",
            "Kubernetes Lease",
            "t = 0 at 1970-01-01 00:00:00.000 UTC",
            "replica-2, thawed after a freeze of 8.5 s, wrote the ledger of demo-ports with token 2; the API server refused it",
            "replica-1 had taken the lock with token 6.",
            r#"class="split-brain""#,
        ] {
            assert!(svg.contains(expected), "missing {expected:?} in\n{svg}");
        }
        // The frozen pool lane and the other pool's lane of replica-2 are both hatched.
        assert_eq!(svg.matches(r#"<rect class="frozen""#).count(), 2);
    }

    #[test]
    fn tags_balance_and_text_is_escaped() {
        let mut t = demo();
        t.pools[0].0 = "a<b&c".into();
        for h in &mut t.holds {
            if h.pool == "demo-ports" {
                h.pool = "a<b&c".into();
            }
        }
        let svg = render(&t);
        assert!(svg.contains("pool a&lt;b&amp;c") && !svg.contains("a<b"));
        for tag in ["g", "text", "title", "rect", "line", "path"] {
            let opened = svg.matches(&format!("<{tag} ")).count() + svg.matches(&format!("<{tag}>")).count();
            let closed = svg.matches(&format!("</{tag}>")).count();
            let open_tag = format!("<{tag} ");
            let selfclosed = svg.split(&open_tag).skip(1).filter(|rest| {
                let end = rest.find('>').unwrap();
                rest[..end].ends_with('/')
            });
            assert_eq!(opened, closed + selfclosed.count(), "<{tag}>");
        }
    }

    #[test]
    fn no_events_no_bars() {
        let svg = render(&Timeline::default());
        assert!(
            svg.starts_with("<svg ") && svg.contains("No lock events") && svg.trim_end().ends_with("</svg>")
        );
    }

    #[test]
    fn ticks_and_clock() {
        let table = [
            (0, 1_000_000, 100_000),
            (0, 10_000_000, 1_000_000),
            (0, 30_000_000, 5_000_000),
            (0, 100_000, 20_000),
        ];
        for (first, last, step) in table {
            assert_eq!(Scale::new(first, last).step(), step, "{first}..{last}");
        }
        assert_eq!(clock(1_795_922_840_383_848), "2026-11-29 03:27:20.383 UTC");
        assert_eq!(wrap("aa bb cc dd", 5), ["aa bb", "cc dd"]);
        assert_eq!(wrap("aaaaaaa bb", 5), ["aaaaaaa", "bb"]);
    }
}
