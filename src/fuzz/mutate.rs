//! The mutator: byte-level edits (flips, insertions, deletions, truncation, splicing) and
//! JSON-aware ones (a value replaced by a huge number, a long string, a deep nest or a value of
//! the wrong type; a string replaced by another string seen in the seeds, so that tags and keys
//! get swapped for each other).

use rand::Rng;
use rand::rngs::StdRng;

/// Mutants larger than this are cut back: the decoders' own size limits sit in front of them
/// on the wire (SyncKit 2 MB, WebSocket frames), and big inputs would only slow the run down.
pub const MAX_INPUT: usize = 64 * 1024;

/// Values that break decoders: numbers outside every integer type and outside f64, negative
/// zero, fractions, exponents, lone surrogates, NULs, and every JSON type.
const INTERESTING_VALUES: &[&str] = &[
    "0",
    "-0",
    "-1",
    "1.5",
    "1e2",
    "1.0",
    "-1e2",
    "1e309",
    "-1e309",
    "1e-400",
    "4294967295",
    "4294967296",
    "9007199254740991",
    "9007199254740992",
    "9007199254740993",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "123456789012345678901234567890",
    "0.1e99999999999999999999",
    "null",
    "true",
    "false",
    "[]",
    "{}",
    "\"\"",
    "\"x\"",
    "[null]",
    "{\"\":null}",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"\\udc00\\ud800\"",
    "\"\\u00e9\\ud83d\\ude80\"",
    "\"\\\\\"",
    "{\"_tag\":\"None\"}",
    "{\"_tag\":\"Some\",\"value\":null}",
    "{\"__deleted\":true}",
];

/// Bytes worth writing over a random one: JSON structure, escapes and broken UTF-8.
const INTERESTING_BYTES: &[u8] = b"\0\x7f\x80\xbf\xc0\xc3\xe2\xf0\xf4\xff\"\\{}[],:-+.eE0129 \t\n";

pub struct Mutator<'a> {
    /// Every JSON string literal in the seeds (quotes included).
    dictionary: &'a [Vec<u8>],
}

impl<'a> Mutator<'a> {
    pub fn new(dictionary: &'a [Vec<u8>]) -> Self {
        Mutator { dictionary }
    }

    /// Applies one to eight mutations to `input`; `other` is a second corpus entry to splice from.
    pub fn mutate(&self, rng: &mut StdRng, input: &mut Vec<u8>, other: &[u8]) {
        let rounds = 1 + (rng.random::<u32>() % 256).leading_zeros().saturating_sub(24).min(7);
        for _ in 0..rounds {
            self.mutate_once(rng, input, other);
        }
        input.truncate(MAX_INPUT);
    }

    fn mutate_once(&self, rng: &mut StdRng, input: &mut Vec<u8>, other: &[u8]) {
        let len = input.len();
        match rng.random_range(0..16u32) {
            0 if len > 0 => {
                let at = rng.random_range(0..len);
                input[at] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let at = rng.random_range(0..len);
                input[at] = INTERESTING_BYTES[rng.random_range(0..INTERESTING_BYTES.len())];
            }
            2 => {
                let at = rng.random_range(0..=len);
                let n = rng.random_range(1..=8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                input.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let at = rng.random_range(0..len);
                let n = rng.random_range(1..=(len - at).min(16));
                input.drain(at..at + n);
            }
            4 if len > 0 => input.truncate(rng.random_range(0..len)),
            5 if len > 0 => {
                // Repeat a slice: duplicated keys, members and array elements.
                let (start, end) = random_range_of(rng, len);
                let copy = input[start..end].to_vec();
                let at = rng.random_range(0..=len);
                input.splice(at..at, copy);
            }
            6 if !other.is_empty() => {
                // Splice: our head, the other's tail.
                let cut = rng.random_range(0..=len);
                let from = rng.random_range(0..other.len());
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
            7 if !other.is_empty() => {
                let (start, end) = random_range_of(rng, other.len());
                let at = rng.random_range(0..=len);
                input.splice(at..at, other[start..end].iter().copied());
            }
            8 | 9 => {
                if let Some((start, end)) = random_value(rng, input) {
                    let value = INTERESTING_VALUES[rng.random_range(0..INTERESTING_VALUES.len())].as_bytes();
                    input.splice(start..end, value.iter().copied());
                }
            }
            10 => {
                if let Some((start, end)) = random_value(rng, input) {
                    let value = big_value(rng);
                    input.splice(start..end, value);
                }
            }
            11 => {
                // Wrong type by wrapping: `v` → `[v]` or `{"v":v}`.
                if let Some((start, end)) = random_value(rng, input) {
                    let (open, close): (&[u8], &[u8]) = if rng.random() { (b"[", b"]") } else { (b"{\"v\":", b"}") };
                    input.splice(end..end, close.iter().copied());
                    input.splice(start..start, open.iter().copied());
                }
            }
            12 | 13 if !self.dictionary.is_empty() => {
                // Another string from the seeds, in a string's place (tags, keys, ids).
                let strings = string_spans(input);
                if !strings.is_empty() {
                    let (start, end) = strings[rng.random_range(0..strings.len())];
                    let word = &self.dictionary[rng.random_range(0..self.dictionary.len())];
                    input.splice(start..end, word.iter().copied());
                }
            }
            14 => {
                // Drop a value together with what leads up to it (a missing member or element).
                if let Some((start, end)) = random_value(rng, input) {
                    let mut from = start;
                    while from > 0 && !matches!(input[from - 1], b',' | b'{' | b'[') {
                        from -= 1;
                    }
                    if from > 0 && input[from - 1] == b',' {
                        from -= 1;
                    }
                    input.drain(from..end);
                }
            }
            _ => {
                // A numeric value nudged by one: off-by-one at every boundary.
                let numbers = number_spans(input);
                if !numbers.is_empty() {
                    let (start, end) = numbers[rng.random_range(0..numbers.len())];
                    if let Ok(n) = std::str::from_utf8(&input[start..end]).unwrap_or("x").parse::<i128>() {
                        let n = if rng.random() { n + 1 } else { n - 1 };
                        input.splice(start..end, n.to_string().into_bytes());
                    }
                }
            }
        }
    }
}

fn random_range_of(rng: &mut StdRng, len: usize) -> (usize, usize) {
    let start = rng.random_range(0..len);
    let end = rng.random_range(start..=len.min(start + 64));
    (start, end)
}

/// Nests, long strings, many members and many elements.
fn big_value(rng: &mut StdRng) -> Vec<u8> {
    let n = [10, 127, 128, 129, 1000, 5000][rng.random_range(0..6)];
    match rng.random_range(0..5u32) {
        0 => {
            let mut v = vec![b'['; n];
            v.extend(std::iter::repeat_n(b']', n));
            v
        }
        1 => {
            let mut v = b"{\"a\":".repeat(n);
            v.push(b'1');
            v.extend(std::iter::repeat_n(b'}', n));
            v
        }
        2 => {
            let mut v = vec![b'"'];
            v.extend(std::iter::repeat_n(if rng.random() { b'a' } else { 0xe9 }, n * 4));
            v.push(b'"');
            v
        }
        3 => {
            let mut v = b"[".to_vec();
            v.extend((0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(",").into_bytes());
            v.push(b']');
            v
        }
        _ => {
            let mut v = b"{".to_vec();
            let members: Vec<String> = (0..n).map(|i| format!("\"k{i}\":{i}")).collect();
            v.extend(members.join(",").into_bytes());
            v.push(b'}');
            v
        }
    }
}

/// The span of a JSON value that starts at a random place where one can start (after `:`, `[`
/// or `,`), found by scanning rather than parsing, so it also works on broken JSON.
fn random_value(rng: &mut StdRng, input: &[u8]) -> Option<(usize, usize)> {
    let starts: Vec<usize> =
        input.iter().enumerate().filter(|(_, b)| matches!(b, b':' | b'[' | b',')).map(|(i, _)| i + 1).collect();
    if starts.is_empty() {
        return None;
    }
    let mut start = starts[rng.random_range(0..starts.len())];
    while start < input.len() && input[start].is_ascii_whitespace() {
        start += 1;
    }
    let end = value_end(input, start)?;
    Some((start, end))
}

fn value_end(input: &[u8], start: usize) -> Option<usize> {
    match *input.get(start)? {
        b'"' => string_end(input, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = start;
            while i < input.len() {
                match input[i] {
                    b'"' => {
                        i = string_end(input, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            let len = input[start..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())
                .unwrap_or(input.len() - start);
            (len > 0).then_some(start + len)
        }
    }
}

/// The index after the closing quote of the string opening at `start`.
fn string_end(input: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < input.len() {
        match input[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Every string literal's span (keys and values alike).
pub fn string_spans(input: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'"' {
            match string_end(input, i) {
                Some(end) => {
                    spans.push((i, end));
                    i = end;
                }
                None => break,
            }
        } else {
            i += 1;
        }
    }
    spans
}

fn number_spans(input: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'"' {
            i = string_end(input, i).unwrap_or(input.len());
        } else if input[i].is_ascii_digit() || input[i] == b'-' {
            let start = i;
            i += 1;
            while i < input.len() && input[i].is_ascii_digit() {
                i += 1;
            }
            spans.push((start, i));
        } else {
            i += 1;
        }
    }
    spans
}

/// The dictionary for string swaps: every distinct string literal of the seeds.
pub fn dictionary(seeds: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut words: Vec<Vec<u8>> =
        seeds.iter().flat_map(|s| string_spans(s).into_iter().map(|(a, b)| s[a..b].to_vec())).collect();
    words.sort();
    words.dedup();
    words
}
