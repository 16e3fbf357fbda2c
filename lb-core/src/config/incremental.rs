//! A config text parsed against the one applied before it: only the VIPs
//! whose text changed are parsed and validated; the others are taken from
//! the earlier `Config`. At 1,000 VIPs x 64 backends (5.8 MB of TOML) a whole
//! parse takes about 0.4 s; a change of one VIP should not.
//!
//! The text is cut where a line is exactly `[[vip]]`: a head (everything
//! before the first such line) and one piece per VIP. That cut is the
//! document's structure only when nothing else can span it, so the short
//! way is taken only when all of these hold, and the whole text is parsed
//! otherwise (same result, same errors, only slower):
//! - the text has no multi-line string (`"""` or `'''`), inside which a
//!   `[[vip]]` line would be text;
//! - in each VIP's piece every line that begins with `[` (after spaces or tabs)
//!   opens one of that VIP's own tables (`[vip.` or `[[vip.`), so no piece
//!   sets anything outside its VIP (a `[health]` after the VIPs would give
//!   every VIP its defaults);
//! - the head is the earlier text's head (the defaults of every VIP, the
//!   top-level settings);
//! - the earlier text cuts the same way into as many pieces as its config
//!   has VIPs (piece i is VIP i).
//!
//! A piece equal to one of the earlier text's takes that VIP as it was
//! (defaults included: the head is the same). The earlier text is not
//! kept: only its cut's pieces by hash ([`TextCut`], xxh3-128 each, 16 KB
//! at the declared limits where the text is 5.8 MB), and a piece is equal
//! to an earlier one when their hashes are. The changed pieces are parsed
//! and validated after the head, as a document of their own, and the rules
//! that span VIPs (limits, unique names and endpoints, one `unhandled` per
//! address) are checked again over the whole list. Any problem found the
//! short way sends the text through the whole parse, which reports it with
//! its line and column in the real file.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use itertools::Itertools as _;
use rayon::prelude::*;
use std::net::IpAddr;

use lb_common::maps::{MAX_BACKENDS, MAX_VIPS};

use super::error::ConfigError;
use super::types::{Config, Unhandled, Vip};
use super::validate::parse_and_validate;

/// A text cut at its `[[vip]]` lines.
#[derive(Debug, PartialEq)]
struct Cut<'a> {
    head: &'a str,
    vips: Vec<&'a str>,
}

/// What the short way keeps of a text: its head's and each VIP piece's
/// hash (xxh3-128), not the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextCut {
    head: u128,
    vips: Vec<u128>,
}

impl TextCut {
    /// `text`'s cut, or None where the cut does not apply (then no text
    /// parsed against it takes the short way).
    pub fn of(text: &str) -> Option<TextCut> {
        cut(text).map(|c| TextCut::hashed(&c))
    }

    fn hashed(cut: &Cut<'_>) -> TextCut {
        TextCut {
            head: hash(cut.head),
            // On every core.
            vips: cut.vips.par_iter().map(|p| hash(p)).collect(),
        }
    }
}

fn hash(piece: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(piece.as_bytes())
}

/// Cut `text` into its head and VIP pieces, or None when the cut may not be
/// the document's structure (see the module's rules).
fn cut(text: &str) -> Option<Cut<'_>> {
    cut_in_runs(text, RUN_BYTES)
}

/// [`cut`], the text looked through in runs of about `run_bytes`.
fn cut_in_runs(text: &str, run_bytes: usize) -> Option<Cut<'_>> {
    // The text's lines in a few runs, each from a line's start, looked
    // through on every core (a tenth of a one-VIP apply at the declared
    // limits, on one core); their headers then in order.
    let runs = line_runs(text, run_bytes);
    let headers: Vec<Vec<(usize, Header)>> = if runs.len() == 1 {
        vec![headers_in(text, runs[0].clone())?]
    } else {
        runs.into_par_iter()
            .map(|run| headers_in(text, run))
            .collect::<Option<_>>()?
    };
    let mut starts = Vec::new();
    for (at, header) in headers.into_iter().flatten() {
        match header {
            Header::Vip => starts.push(at),
            Header::VipsOwn => {}
            Header::Other if starts.is_empty() => {}
            Header::Other => return None,
        }
    }
    let head = &text[..starts.first().copied().unwrap_or(text.len())];
    let vips = starts
        .iter()
        .zip(starts.iter().skip(1).chain(std::iter::once(&text.len())))
        .map(|(&a, &b)| &text[a..b])
        .collect();
    Some(Cut { head, vips })
}

/// A text from this size on is looked through in runs on every core.
const RUN_BYTES: usize = 1 << 20;

/// `text`'s byte ranges, about `run_bytes` each (one for a shorter text),
/// each beginning where a line begins and ending after a newline or at
/// the text's end.
fn line_runs(text: &str, run_bytes: usize) -> Vec<std::ops::Range<usize>> {
    let bytes = text.as_bytes();
    let mut runs = Vec::with_capacity(text.len() / run_bytes.max(1) + 1);
    let mut start = 0;
    while text.len() - start > run_bytes {
        let Some(newline) = memchr::memchr(b'\n', &bytes[start + run_bytes..]) else {
            break;
        };
        let end = start + run_bytes + newline + 1;
        runs.push(start..end);
        start = end;
    }
    runs.push(start..text.len());
    runs
}

/// What a header line opens, for the cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Header {
    /// `[[vip]]`: a VIP's piece begins.
    Vip,
    /// One of a VIP's own tables (`[vip.` or `[[vip.`).
    VipsOwn,
    /// Anything else.
    Other,
}

/// The header lines that begin in `run` (a range of `text` that begins at
/// a line's start), in order; None when `run` holds a multi-line string
/// delimiter (`"""` or `'''`), inside which a `[[vip]]` line would be
/// text. A delimiter has no newline in it, so none spans two runs.
fn headers_in(text: &str, run: std::ops::Range<usize>) -> Option<Vec<(usize, Header)>> {
    // (SIMD substring search: `str::contains` took a tenth of an apply.)
    let bytes = &text.as_bytes()[run.clone()];
    if memchr::memmem::find(bytes, b"\"\"\"").is_some()
        || memchr::memmem::find(bytes, b"'''").is_some()
    {
        return None;
    }
    // Only a line that begins with `[` (after spaces or tabs, TOML's
    // whitespace) can be a header. Their starts are found by substring
    // search, not line by line: 5.8 MB at the declared limits. The lines
    // that begin with a space or a tab (rare) are collected and sorted; the
    // `\n[` ones (one per table: 65,000 at the limits) are merged in as
    // they are found, not collected and sorted.
    let mut indented: Vec<usize> = [&b"\n "[..], b"\n\t"]
        .iter()
        .flat_map(|p| memchr::memmem::find_iter(bytes, p).map(|at| at + 1))
        .collect();
    indented.sort_unstable();
    let lines = std::iter::once(0)
        .chain(memchr::memmem::find_iter(bytes, b"\n[").map(|at| at + 1))
        .merge(indented);
    let run_text = &text[run.clone()];
    let mut headers = Vec::new();
    for at in lines {
        let rest = &run_text[at..];
        let line = rest.split_once('\n').map_or(rest, |(line, _)| line);
        let Some(header) = line
            .trim_start_matches([' ', '\t'])
            .strip_prefix('[')
            .map(str::trim_end)
        else {
            continue;
        };
        let kind = if header == "[vip]]" {
            Header::Vip
        } else if header.starts_with("vip.") || header.starts_with("[vip.") {
            Header::VipsOwn
        } else {
            Header::Other
        };
        headers.push((run.start + at, kind));
    }
    Some(headers)
}

/// Parse and validate `text` (named `file` in errors) as
/// [`parse`](super::parse) does, taking the VIPs whose text is unchanged
/// from `previous` (an earlier text's cut and what it parsed into). The
/// result is the same `Config` or the same error as a whole parse's.
pub fn parse_against(
    text: &str,
    file: &str,
    previous: Option<(&TextCut, &Config)>,
) -> Result<Config, ConfigError> {
    parse_cut(text, file, previous).map(|(config, _)| config)
}

/// [`parse_against`], and `text`'s own cut when the parse made one (to
/// parse the next text against; else [`TextCut::of`]).
pub fn parse_cut(
    text: &str,
    file: &str,
    previous: Option<(&TextCut, &Config)>,
) -> Result<(Config, Option<TextCut>), ConfigError> {
    let short = previous.and_then(|(earlier, old)| short_way(text, file, earlier, old));
    if let Some((config, cut)) = short.or_else(|| in_parts_cut(text, file)) {
        return Ok((config, Some(cut)));
    }
    parse_and_validate(text, file).map(|config| (config, None))
}

/// The short way, and `text`'s cut; None where it does not apply or found
/// a problem.
fn short_way(text: &str, file: &str, earlier: &TextCut, old: &Config) -> Option<(Config, TextCut)> {
    let new = cut(text)?;
    if earlier.vips.len() != old.vips.len() || hash(new.head) != earlier.head {
        return None;
    }
    // Every piece hashed on every core (xxh3: 5.8 MB in well under a
    // millisecond at the declared limits).
    let cut = TextCut::hashed(&new);
    // Piece i is most often the earlier piece i; the others are looked up
    // among the earlier pieces by hash (the map made only when a piece is
    // not in place).
    let in_place: Vec<bool> = cut
        .vips
        .iter()
        .enumerate()
        .map(|(i, h)| earlier.vips.get(i) == Some(h))
        .collect();
    let by_hash: Option<HashMap<u128, usize>> = in_place.contains(&false).then(|| {
        let mut map = HashMap::with_capacity(earlier.vips.len());
        for (j, &h) in earlier.vips.iter().enumerate() {
            map.entry(h).or_insert(j);
        }
        map
    });
    let taken: Vec<Option<&Arc<Vip>>> = cut
        .vips
        .iter()
        .enumerate()
        .map(|(i, h)| {
            if in_place[i] {
                return Some(&old.vips[i]);
            }
            by_hash.as_ref()?.get(h).map(|&j| &old.vips[j])
        })
        .collect();
    assemble(&new, &taken, file).map(|config| (config, cut))
}

/// A text with no earlier one, the short way's way: its VIP pieces parsed
/// in parts on every core instead of the whole text on one (a start at the
/// declared limits parses 5.8 MB). None where the cut does not apply, for
/// a text of few VIPs (one part: the whole parse is as fast) or on any
/// problem, which the whole parse then reports. With `text`'s cut.
fn in_parts_cut(text: &str, file: &str) -> Option<(Config, TextCut)> {
    let new = cut(text)?;
    if new.vips.len() <= PIECES_PER_PART {
        return None;
    }
    let config = assemble(&new, &vec![None; new.vips.len()], file)?;
    Some((config, TextCut::hashed(&new)))
}

/// The config of `new`'s head and pieces: piece i is `taken[i]` where that
/// is Some, else parsed (with the head, in parts on every core); None on
/// any problem.
fn assemble(new: &Cut<'_>, taken: &[Option<&Arc<Vip>>], file: &str) -> Option<Config> {
    let changed: Vec<&str> = new
        .vips
        .iter()
        .zip(taken)
        .filter(|(_, vip)| vip.is_none())
        .map(|(piece, _)| *piece)
        .collect();
    // The changed pieces after the head, as documents of their own, a few
    // pieces each, on every core. Small parts, not one per core: a part's
    // parse allocates several times its text, and memory freed by one part
    // is used again by the next on the same thread instead of faulted in
    // afresh (docs/BENCHMARKS.md, issue 20, "Seventh round: the plan of
    // every VIP").
    // Nothing changed: the head alone, which gives the top-level settings.
    let chunks: Vec<&[&str]> = if changed.is_empty() {
        vec![&[]]
    } else {
        changed.chunks(PIECES_PER_PART).collect()
    };
    let parts: Vec<Config> = chunks
        .par_iter()
        .map(|pieces| parse_and_validate(&document(new.head, pieces), file).ok())
        .collect::<Option<_>>()?;
    let mut parts = parts.into_iter();
    let mut parsed = parts.next()?;
    let mut fresh = std::mem::take(&mut parsed.vips)
        .into_iter()
        .chain(parts.flat_map(|p| p.vips));
    // An unchanged VIP is the earlier config's own (shared, not copied).
    let vips: Vec<Arc<Vip>> = taken
        .iter()
        .map(|vip| match vip {
            Some(vip) => Some(Arc::clone(vip)),
            None => fresh.next(),
        })
        .collect::<Option<_>>()?;
    if fresh.next().is_some() || !across_vips(&vips) {
        return None;
    }
    parsed.vips = vips;
    Some(parsed)
}

/// Changed pieces parsed as one document, at most.
const PIECES_PER_PART: usize = 16;

/// `head`, then `pieces`, each on lines of its own.
fn document(head: &str, pieces: &[&str]) -> String {
    let mut part =
        String::with_capacity(head.len() + pieces.iter().map(|p| p.len() + 1).sum::<usize>());
    part.push_str(head);
    for piece in pieces {
        if !part.is_empty() && !part.ends_with('\n') {
            part.push('\n');
        }
        part.push_str(piece);
    }
    part
}

/// The rules that span VIPs, over the whole list: at most `MAX_VIPS` VIPs
/// and `MAX_BACKENDS` backends, names and endpoints unique, one `unhandled`
/// per address.
fn across_vips(vips: &[Arc<Vip>]) -> bool {
    let backends: usize = vips.iter().map(|v| v.backends.len()).sum();
    if vips.len() > MAX_VIPS as usize || backends > MAX_BACKENDS as usize {
        return false;
    }
    let mut names = HashSet::with_capacity(vips.len());
    let mut endpoints = HashSet::with_capacity(vips.len());
    let mut unhandled: HashMap<IpAddr, Unhandled> = HashMap::with_capacity(vips.len());
    vips.iter().all(|v| {
        names.insert(v.name.as_str())
            && endpoints.insert((v.address, v.port, v.protocol))
            && *unhandled.entry(v.address).or_insert(v.unhandled) == v.unhandled
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`in_parts_cut`]'s config.
    fn in_parts(text: &str, file: &str) -> Option<Config> {
        in_parts_cut(text, file).map(|(config, _)| config)
    }

    const HEAD: &str = "interface = \"eth0\"\nhash_seed = 3\n\n[imbalance]\nmax_cv = 0.5\n\n";

    fn vip(n: usize, weight: u32) -> String {
        format!(
            "[[vip]]\nname = \"v{n}\"\naddress = \"198.18.100.{n}\"\nport = 80\n\
             protocol = \"tcp\"\n[[vip.backend]]\nname = \"a\"\naddress = \"198.18.0.1\"\n\
             mac = \"02:00:00:00:00:01\"\nweight = {weight}\n[[vip.backend]]\nname = \"b\"\n\
             address = \"198.18.0.2\"\nmac = \"02:00:00:00:00:02\"\n"
        )
    }

    fn text(vips: &[String]) -> String {
        format!("{HEAD}{}", vips.concat())
    }

    /// The short way's answer is the whole parse's, Ok or Err, and says
    /// whether the short way was taken.
    fn same_as_whole(old: &str, new: &str) -> bool {
        let earlier = parse_and_validate(old, "old.toml").expect("the earlier text is valid");
        let whole = parse_and_validate(new, "new.toml");
        let Some(old_cut) = TextCut::of(old) else {
            return false;
        };
        let against = parse_cut(new, "new.toml", Some((&old_cut, &earlier)));
        match (&whole, &against) {
            (Ok(a), Ok((b, cut))) => {
                assert_eq!(a, b, "{new}");
                // The cut handed back is the text's own, when one is.
                if let Some(cut) = cut {
                    assert_eq!(Some(cut), TextCut::of(new).as_ref());
                }
            }
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            _ => panic!("whole {whole:?} but against {against:?}"),
        }
        short_way(new, "new.toml", &old_cut, &earlier).is_some()
    }

    #[test]
    fn the_head_and_each_vip_are_cut_apart() {
        let t = text(&[vip(1, 1), vip(2, 1)]);
        let c = cut(&t).unwrap();
        assert_eq!(c.head, HEAD);
        assert_eq!(c.vips, [vip(1, 1), vip(2, 1)]);
        assert_eq!(cut(HEAD).unwrap().vips.len(), 0);
        // Headers indented by spaces or tabs, CRLF line ends.
        let t = format!("{HEAD}\t[[vip]]\r\nname = \"a\"\r\n  [[vip.backend]]\r\n [[vip]] \n");
        assert_eq!(cut(&t).unwrap().vips.len(), 2);
        // A top-level table after a VIP: no cut.
        assert_eq!(cut(&format!("{t}\t[health]\n")), None);
        assert_eq!(cut(&format!("{t}[[other]]\n")), None);
    }

    /// Looked through in runs of any size (a run's edge anywhere: before
    /// a header's `[`, inside a `"""`, after an indent), a text is cut
    /// as it is in one run.
    #[test]
    fn a_text_is_cut_alike_in_runs_of_any_size() {
        let plain = text(&[vip(1, 1), vip(2, 1), vip(3, 2)]);
        let indented =
            format!("{HEAD}\t[[vip]]\r\nname = \"a\"\r\n  [[vip.backend]]\r\n [[vip]] \n");
        let texts = [
            plain.clone(),
            indented.clone(),
            format!("{indented}\t[health]\n"),
            format!("{plain}[safety]\nmax_flows_moved = 0.5\n"),
            plain.replace("hash_seed = 3\n", "hash_seed = 3\n# \"\"\"\n"),
            format!("{plain}# '''"),
            plain.replace("[[vip]]\nname = \"v2\"", "[[vip]] # second\nname = \"v2\""),
            String::new(),
            "\n\n[[vip]]".to_string(),
        ];
        for t in &texts {
            let whole = cut_in_runs(t, usize::MAX);
            for run_bytes in 0..=t.len() + 1 {
                assert_eq!(cut_in_runs(t, run_bytes), whole, "{run_bytes} in {t:?}");
            }
        }
        assert!(cut_in_runs(&texts[0], 1).is_some_and(|c| c.vips.len() == 3));
        assert!(cut_in_runs(&texts[4], 7).is_none());
        assert!(cut_in_runs(&texts[5], 7).is_none());
    }

    /// Many changed VIPs are parsed in parts, one per core; the result, and
    /// an error that spans parts, are still the whole parse's.
    #[test]
    fn many_changed_vips_are_parsed_in_parts_with_the_same_result() {
        let n = 3 * PIECES_PER_PART + 5;
        let old = text(&(1..=n).map(|i| vip(i, 1)).collect::<Vec<_>>());
        let every = text(&(1..=n).map(|i| vip(i, 2)).collect::<Vec<_>>());
        assert!(same_as_whole(&old, &every));
        // The first and the last VIP given one name: parsed in different
        // parts, refused as the whole parse refuses it.
        let mut vips: Vec<String> = (1..=n).map(|i| vip(i, 2)).collect();
        vips[n - 1] = vips[n - 1].replace(&format!("name = \"v{n}\""), "name = \"v1\"");
        assert!(!same_as_whole(&old, &text(&vips)));
    }

    /// A text of many VIPs with no earlier one (a start, `xlb validate`) is
    /// parsed in parts; its result, and its errors, are the whole parse's.
    #[test]
    fn a_text_of_many_vips_is_parsed_in_parts_with_the_whole_parses_result() {
        let n = 3 * PIECES_PER_PART + 5;
        let vips: Vec<String> = (1..=n).map(|i| vip(i, 1)).collect();
        let t = text(&vips);
        let whole = parse_and_validate(&t, "t.toml").unwrap();
        assert_eq!(in_parts(&t, "t.toml").as_ref(), Some(&whole));
        assert_eq!(super::super::parse(&t, "t.toml").unwrap(), whole);
        // Few VIPs: one part, the whole parse.
        assert_eq!(in_parts(&text(&vips[..PIECES_PER_PART]), "t.toml"), None);
        // Problems within a part and across parts: the whole parse's error,
        // with the real file's lines.
        let mut bad = vips.clone();
        bad[n - 2] = bad[n - 2].replace("weight = 1", "weight = -1");
        let mut twice = vips.clone();
        twice[n - 1] = twice[n - 1].replace(&format!("name = \"v{n}\""), "name = \"v1\"");
        for wrong in [text(&bad), text(&twice)] {
            assert_eq!(in_parts(&wrong, "t.toml"), None);
            assert_eq!(
                super::super::parse(&wrong, "t.toml")
                    .unwrap_err()
                    .to_string(),
                parse_and_validate(&wrong, "t.toml")
                    .unwrap_err()
                    .to_string()
            );
        }
    }

    #[test]
    fn a_changed_vip_is_parsed_alone_and_the_result_is_the_whole_parses() {
        let old = text(&[vip(1, 1), vip(2, 1), vip(3, 1)]);
        // One weight changed; a VIP added; one removed; two swapped.
        assert!(same_as_whole(
            &old,
            &text(&[vip(1, 1), vip(2, 5), vip(3, 1)])
        ));
        assert!(same_as_whole(
            &old,
            &text(&[vip(1, 1), vip(2, 1), vip(3, 1), vip(4, 2)])
        ));
        assert!(same_as_whole(&old, &text(&[vip(1, 1), vip(3, 1)])));
        assert!(same_as_whole(
            &old,
            &text(&[vip(2, 1), vip(1, 1), vip(3, 1)])
        ));
        // Nothing changed.
        assert!(same_as_whole(&old, &old));
    }

    /// An unchanged VIP is the earlier config's own `Arc`, not a copy; a
    /// changed one is new.
    #[test]
    fn unchanged_vips_are_shared_with_the_earlier_config() {
        let old = text(&[vip(1, 1), vip(2, 1), vip(3, 1)]);
        let earlier = super::super::parse(&old, "old.toml").unwrap();
        let new = text(&[vip(1, 1), vip(2, 5), vip(3, 1)]);
        let old_cut = TextCut::of(&old).unwrap();
        let config = parse_against(&new, "new.toml", Some((&old_cut, &earlier))).unwrap();
        let shared: Vec<bool> = config
            .vips
            .iter()
            .zip(&earlier.vips)
            .map(|(a, b)| Arc::ptr_eq(a, b))
            .collect();
        assert_eq!(shared, [true, false, true]);
        // Moved: found by its text, still shared.
        let moved = text(&[vip(3, 1), vip(1, 1)]);
        let config = parse_against(&moved, "new.toml", Some((&old_cut, &earlier))).unwrap();
        assert!(Arc::ptr_eq(&config.vips[0], &earlier.vips[2]));
        assert!(Arc::ptr_eq(&config.vips[1], &earlier.vips[0]));
    }

    #[test]
    fn problems_are_reported_by_the_whole_parse() {
        let old = text(&[vip(1, 1), vip(2, 1)]);
        // A bad weight in the changed VIP: the line is the real file's.
        let bad = text(&[vip(1, 1), vip(2, 1).replace("weight = 1", "weight = -1")]);
        assert!(!same_as_whole(&old, &bad));
        // A changed VIP that takes an unchanged one's name or endpoint.
        let renamed = vip(3, 1).replace("\"v3\"", "\"v1\"");
        assert!(!same_as_whole(&old, &text(&[vip(1, 1), renamed])));
        let moved = vip(3, 1).replace("198.18.100.3", "198.18.100.1");
        assert!(!same_as_whole(&old, &text(&[vip(1, 1), moved])));
        // VIPs at one address that disagree on `unhandled`.
        let other = vip(3, 1)
            .replace("port = 80", "port = 81")
            .replace("198.18.100.3", "198.18.100.1")
            .replace(
                "protocol = \"tcp\"\n",
                "protocol = \"tcp\"\nunhandled = \"pass\"\n",
            );
        assert!(!same_as_whole(&old, &text(&[vip(1, 1), other])));
    }

    #[test]
    fn the_whole_text_is_parsed_where_the_cut_may_be_wrong() {
        let old = text(&[vip(1, 1), vip(2, 1)]);
        // Another head: every VIP's defaults may have changed.
        let head = old.replace("max_cv = 0.5", "max_cv = 0.6");
        assert!(!same_as_whole(&old, &head));
        // A top-level table after the VIPs.
        let after = format!(
            "{}[safety]\nmax_flows_moved = 0.5\n",
            text(&[vip(1, 1), vip(2, 2)])
        );
        assert!(!same_as_whole(&old, &after));
        // A multi-line string.
        let long =
            text(&[vip(1, 1), vip(2, 1)]).replace("hash_seed = 3\n", "hash_seed = 3\n# \"\"\"\n");
        assert!(cut(&long).is_none());
        // A `[[vip]]` with a comment on its line is not cut at.
        let commented = text(&[vip(1, 1), vip(2, 2).replace("[[vip]]", "[[vip]] # second")]);
        assert!(!same_as_whole(&old, &commented));
    }
}
