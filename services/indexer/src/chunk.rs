//! Code-aware chunks: whole functions and classes where a cheap, line-based
//! parse finds them (Python by indentation, brace languages by brace
//! matching), and line windows with overlap everywhere else. Every chunk has
//! 1-based inclusive line numbers and, when inside a definition, its symbol.

use std::sync::LazyLock;

use regex::Regex;

/// One piece of a file that is indexed and embedded as a unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// 1-based, inclusive.
    pub start_line: u32,
    pub end_line: u32,
    /// The function or class the chunk is (or lies in); empty when none.
    pub symbol: String,
    /// Every definition named inside the chunk, the chunk's own first.
    pub symbols: Vec<String>,
    pub text: String,
}

/// How a file is cut.
#[derive(Clone, Copy, Debug)]
pub struct ChunkParams {
    pub window_lines: usize,
    pub window_overlap: usize,
    pub max_chunk_lines: usize,
}

/// A definition found by the cheap parse: lines `[start, end)`, 0-based.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Block {
    start: usize,
    end: usize,
    name: String,
}

/// Lines of a file read at most; a longer file is cut after them.
const MAX_LINES: usize = 200_000;

pub fn chunk_file(text: &str, language: &str, params: ChunkParams) -> Vec<Chunk> {
    let lines: Vec<&str> = text.lines().take(MAX_LINES).collect();
    if lines.is_empty() {
        return Vec::new();
    }
    let blocks = match language {
        "python" => python_blocks(&lines),
        _ => match brace_patterns(language) {
            Some(patterns) => brace_blocks(&lines, patterns, language == "rust"),
            None => Vec::new(),
        },
    };
    let mut out = Vec::new();
    cover(&lines, &blocks, 0, lines.len(), "", params, &mut out);
    out
}

fn cover(
    lines: &[&str],
    blocks: &[Block],
    lo: usize,
    hi: usize,
    parent: &str,
    params: ChunkParams,
    out: &mut Vec<Chunk>,
) {
    let mut pos = lo;
    for (i, block) in blocks.iter().enumerate() {
        if block.start < pos || block.end > hi {
            continue;
        }
        windows(lines, blocks, pos, block.start, parent, params, out);
        let children: Vec<Block> = blocks[i + 1..]
            .iter()
            .filter(|b| b.start > block.start && b.end <= block.end)
            .cloned()
            .collect();
        if block.end - block.start <= params.max_chunk_lines {
            out.push(make_chunk(lines, blocks, block.start, block.end, &block.name));
        } else if children.is_empty() {
            windows(lines, blocks, block.start, block.end, &block.name, params, out);
        } else {
            cover(lines, &children, block.start, block.end, &block.name, params, out);
        }
        pos = block.end;
    }
    windows(lines, blocks, pos, hi, parent, params, out);
}

fn windows(
    lines: &[&str],
    blocks: &[Block],
    lo: usize,
    hi: usize,
    symbol: &str,
    params: ChunkParams,
    out: &mut Vec<Chunk>,
) {
    // Trim blank lines at both ends; nothing to index in a blank range.
    let mut lo = lo;
    let mut hi = hi.min(lines.len());
    while lo < hi && lines[lo].trim().is_empty() {
        lo += 1;
    }
    while hi > lo && lines[hi - 1].trim().is_empty() {
        hi -= 1;
    }
    if lo >= hi {
        return;
    }
    let step = params.window_lines - params.window_overlap;
    let mut start = lo;
    loop {
        let end = (start + params.window_lines).min(hi);
        out.push(make_chunk(lines, blocks, start, end, symbol));
        if end >= hi {
            break;
        }
        start += step;
    }
}

fn make_chunk(lines: &[&str], blocks: &[Block], start: usize, end: usize, symbol: &str) -> Chunk {
    let mut symbols: Vec<String> = Vec::new();
    if !symbol.is_empty() {
        symbols.push(symbol.to_owned());
    }
    for block in blocks {
        if block.start >= start && block.start < end && !symbols.contains(&block.name) {
            symbols.push(block.name.clone());
        }
    }
    Chunk {
        start_line: u32::try_from(start + 1).unwrap_or(u32::MAX),
        end_line: u32::try_from(end).unwrap_or(u32::MAX),
        symbol: symbol.to_owned(),
        symbols,
        text: lines[start..end].join("\n"),
    }
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

static PY_DEF: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(\s*)(?:async\s+def|def|class)\s+([A-Za-z_][A-Za-z0-9_]*)")
        .unwrap_or_else(|e| panic!("{e}"))
});

fn python_blocks(lines: &[&str]) -> Vec<Block> {
    let mut blocks = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(caps) = PY_DEF.captures(line) else {
            continue;
        };
        let own = caps.get(1).map_or(0, |m| m.as_str().len());
        let name = caps.get(2).map_or("", |m| m.as_str()).to_owned();
        // Decorators and comments right above belong to the definition.
        let mut start = i;
        while start > 0 {
            let above = lines[start - 1];
            let t = above.trim_start();
            if indent(above) == own && (t.starts_with('@') || t.starts_with('#')) {
                start -= 1;
            } else {
                break;
            }
        }
        let mut end = lines.len();
        for (j, next) in lines.iter().enumerate().skip(i + 1) {
            let t = next.trim_start();
            if t.is_empty() || t.starts_with(')') || t.starts_with(']') {
                continue;
            }
            if indent(next) <= own {
                end = j;
                break;
            }
        }
        while end > i + 1 && lines[end - 1].trim().is_empty() {
            end -= 1;
        }
        blocks.push(Block { start, end, name });
    }
    blocks
}

/// Definition headers of a brace language; capture group `name` is the symbol.
fn brace_patterns(language: &str) -> Option<&'static [Regex]> {
    static RUST: LazyLock<Vec<Regex>> = LazyLock::new(|| {
        compile(&[
            r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:(?:async|const|unsafe|extern\s+\S+)\s+)*(?:fn|struct|enum|trait|mod|union)\s+(?P<name>[A-Za-z_][A-Za-z0-9_]*)",
            r"^\s*(?:unsafe\s+)?impl(?:<[^{]*?>)?\s+(?:[A-Za-z0-9_:<>, ]+\s+for\s+)?(?:[A-Za-z0-9_]+::)*(?P<name>[A-Za-z_][A-Za-z0-9_]*)",
            r"^\s*macro_rules!\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)",
        ])
    });
    static JS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
        compile(&[
            r"^\s*(?:export\s+)?(?:default\s+)?(?:async\s+)?function\s*\*?\s*(?P<name>[A-Za-z_$][A-Za-z0-9_$]*)",
            r"^\s*(?:export\s+)?(?:default\s+)?(?:abstract\s+)?(?:class|interface|enum|namespace)\s+(?P<name>[A-Za-z_$][A-Za-z0-9_$]*)",
            r"^\s*(?:export\s+)?(?:const|let|var)\s+(?P<name>[A-Za-z_$][A-Za-z0-9_$]*)\s*(?::[^=]+)?=\s*(?:async\s+)?(?:function\b|\([^)]*\)\s*(?::[^=]+)?=>|[A-Za-z_$][A-Za-z0-9_$]*\s*=>)",
            r"^\s+(?:(?:public|private|protected|static|async|readonly|override|get|set)\s+)*(?P<name>[A-Za-z_$][A-Za-z0-9_$]*)\s*(?:<[^>]*>)?\([^;]*\)\s*(?::\s*[^{;]+)?\{\s*$",
        ])
    });
    static GO: LazyLock<Vec<Regex>> = LazyLock::new(|| {
        compile(&[
            r"^func\s+(?:\([^)]*\)\s*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)",
            r"^type\s+(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s+(?:struct|interface)",
        ])
    });
    static C_LIKE: LazyLock<Vec<Regex>> = LazyLock::new(|| {
        compile(&[
            r"^\s*(?:(?:public|private|protected|internal|static|final|abstract|sealed|open|data|export)\s+)*(?:class|interface|enum|struct|record|object|trait|namespace)\s+(?P<name>[A-Za-z_][A-Za-z0-9_]*)",
            r"^\s*(?:(?:public|private|protected|internal|static|final|abstract|override|virtual|async|inline|suspend|open)\s+)*(?:fun|func|def|function)\s+(?P<name>[A-Za-z_][A-Za-z0-9_]*)",
            r"^\s*(?:(?:public|private|protected|internal|static|final|abstract|override|virtual|async|inline|synchronized|extern|const|unsigned|signed)\s+)*[A-Za-z_][A-Za-z0-9_:<>,\[\]\*&\s]*[\s\*&](?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*\([^;]*$",
        ])
    });
    match language {
        "rust" => Some(RUST.as_slice()),
        "typescript" | "javascript" | "vue" | "svelte" => Some(JS.as_slice()),
        "go" => Some(GO.as_slice()),
        "java" | "kotlin" | "scala" | "c" | "cpp" | "csharp" | "swift" | "php" | "dart" => {
            Some(C_LIKE.as_slice())
        }
        _ => None,
    }
}

fn compile(patterns: &[&str]) -> Vec<Regex> {
    patterns
        .iter()
        .map(|p| Regex::new(p).unwrap_or_else(|e| panic!("chunk pattern {p}: {e}")))
        .collect()
}

const KEYWORDS: &[&str] = &[
    "if", "for", "while", "switch", "catch", "return", "match", "else", "do", "try", "with", "new", "sizeof",
];

fn brace_blocks(lines: &[&str], patterns: &[Regex], rust: bool) -> Vec<Block> {
    let mut blocks = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = patterns
            .iter()
            .find_map(|p| p.captures(line).and_then(|c| c.name("name")).map(|m| m.as_str()))
        else {
            continue;
        };
        if KEYWORDS.contains(&name) {
            continue;
        }
        let Some(end) = brace_end(lines, i, rust) else {
            continue;
        };
        // Doc comments and attributes right above belong to the definition.
        let mut start = i;
        while start > 0 {
            let t = lines[start - 1].trim_start();
            if t.starts_with("///")
                || t.starts_with("//")
                || t.starts_with("#[")
                || t.starts_with('@')
                || t.starts_with("/**")
                || t.starts_with('*')
            {
                start -= 1;
            } else {
                break;
            }
        }
        blocks.push(Block {
            start,
            end,
            name: name.to_owned(),
        });
    }
    blocks
}

/// The line after the brace that closes the block opened on or just after
/// line `from`; None when a `;` ends the statement first (a declaration) or
/// no brace opens within a few lines.
fn brace_end(lines: &[&str], from: usize, rust: bool) -> Option<usize> {
    let mut depth = 0usize;
    let mut opened = false;
    let mut in_block_comment = false;
    for (offset, line) in lines.iter().enumerate().skip(from) {
        if !opened && offset > from + 4 {
            return None;
        }
        let bytes = line.as_bytes();
        let mut k = 0;
        let mut quote: Option<u8> = None;
        while k < bytes.len() {
            let c = bytes[k];
            if in_block_comment {
                if c == b'*' && bytes.get(k + 1) == Some(&b'/') {
                    in_block_comment = false;
                    k += 1;
                }
            } else if let Some(q) = quote {
                if c == b'\\' {
                    k += 1;
                } else if c == q {
                    quote = None;
                }
            } else {
                match c {
                    b'/' if bytes.get(k + 1) == Some(&b'/') => break,
                    b'#' if !rust && bytes.get(k + 1) != Some(&b'[') && k == 0 => break,
                    b'/' if bytes.get(k + 1) == Some(&b'*') => {
                        in_block_comment = true;
                        k += 1;
                    }
                    b'"' | b'`' => quote = Some(c),
                    b'\'' => {
                        // Rust lifetimes ('a) are not quotes; char literals are short.
                        let closes = bytes[k + 1..].iter().take(4).position(|&b| b == b'\'');
                        if !rust || closes.is_some() {
                            quote = Some(c);
                        }
                    }
                    b'{' => {
                        depth += 1;
                        opened = true;
                    }
                    b'}' => {
                        depth = depth.saturating_sub(1);
                        if opened && depth == 0 {
                            return Some(offset + 1);
                        }
                    }
                    b';' if !opened => return None,
                    _ => {}
                }
            }
            k += 1;
        }
    }
    opened.then_some(lines.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARAMS: ChunkParams = ChunkParams {
        window_lines: 10,
        window_overlap: 3,
        max_chunk_lines: 30,
    };

    fn spans(chunks: &[Chunk]) -> Vec<(u32, u32, &str)> {
        chunks
            .iter()
            .map(|c| (c.start_line, c.end_line, c.symbol.as_str()))
            .collect()
    }

    #[test]
    fn python_functions_and_classes_are_whole() {
        let text = "import os\n\n@cache\ndef parse_config(path):\n    with open(path) as f:\n        return f.read()\n\n\nclass Loader:\n    def load(self):\n        return 1\n\nx = 2\n";
        let chunks = chunk_file(text, "python", PARAMS);
        assert_eq!(
            spans(&chunks),
            [
                (1, 1, ""),
                (3, 6, "parse_config"),
                (9, 11, "Loader"),
                (13, 13, "")
            ]
        );
        assert_eq!(chunks[2].symbols, ["Loader", "load"]);
        assert!(chunks[1].text.starts_with("@cache\ndef parse_config"));
    }

    #[test]
    fn rust_items_and_long_impls_split_into_methods() {
        let mut text = String::from(
            "use std::io;\n\n/// Parses.\npub fn parse_config(s: &str) -> Option<&'a str> {\n    let c = '{';\n    if s.is_empty() { return None; }\n    Some(s)\n}\n\nimpl Loader {\n",
        );
        for i in 0..8 {
            text.push_str(&format!(
                "    fn m{i}(&self) {{\n        let x = \"}}\";\n        x;\n        x;\n    }}\n"
            ));
        }
        text.push_str("}\n");
        let chunks = chunk_file(&text, "rust", PARAMS);
        let s = spans(&chunks);
        assert_eq!(s[0], (1, 1, ""));
        assert_eq!(s[1], (3, 8, "parse_config"));
        // The impl is 42 lines (> 30): its methods become chunks of their own.
        assert_eq!(s[2], (10, 10, "Loader"));
        assert_eq!(s[3], (11, 15, "m0"));
        assert_eq!(s.last().map(|x| x.2), Some("Loader"), "closing brace");
        assert_eq!(chunks.iter().filter(|c| c.symbol.starts_with('m')).count(), 8);
    }

    #[test]
    fn typescript_functions_arrows_classes_and_methods() {
        let text = "export function parseConfig(s: string): Config {\n  return JSON.parse(s);\n}\n\nexport const loadUser = async (id: number) => {\n  return fetch(`/u/${id}`);\n};\n\nclass Store {\n  get(key: string): string {\n    return '}';\n  }\n}\n";
        let chunks = chunk_file(text, "typescript", PARAMS);
        assert_eq!(
            spans(&chunks),
            [(1, 3, "parseConfig"), (5, 7, "loadUser"), (9, 13, "Store")]
        );
        assert_eq!(chunks[2].symbols, ["Store", "get"]);
    }

    #[test]
    fn unknown_languages_get_overlapping_windows() {
        let text: String = (1..=25).map(|i| format!("line {i}\n")).collect();
        let chunks = chunk_file(&text, "text", PARAMS);
        assert_eq!(
            spans(&chunks),
            [(1, 10, ""), (8, 17, ""), (15, 24, ""), (22, 25, "")]
        );
        assert!(chunk_file("", "text", PARAMS).is_empty());
        assert!(chunk_file("\n\n  \n", "text", PARAMS).is_empty());
    }

    #[test]
    fn go_and_declarations() {
        let text = "package x\n\nfunc (s *Server) HandleRequest(w http.ResponseWriter) {\n\tw.Write(nil)\n}\n\ntype Config struct {\n\tName string\n}\n";
        let chunks = chunk_file(text, "go", PARAMS);
        assert_eq!(
            spans(&chunks),
            [(1, 1, ""), (3, 5, "HandleRequest"), (7, 9, "Config")]
        );
        let decl = "fn external();\nfn body() {\n}\n";
        assert_eq!(
            spans(&chunk_file(decl, "rust", PARAMS)),
            [(1, 1, ""), (2, 3, "body")]
        );
    }
}
