//! The code-aware tokenizer: identifiers are split at `_`, `-` and camelCase
//! boundaries and lowercased, and a multi-part identifier is also kept whole
//! with its separators dropped, so `parseConfig`, `parse_config` and
//! `ParseConfig` all yield `parseconfig`, `parse` and `config`.

use tantivy::tokenizer::{Token, TokenStream, Tokenizer};

/// The name the tokenizer is registered under in every index.
pub const CODE_TOKENIZER: &str = "code";

/// Longest token kept, in bytes; longer runs are hashes or blobs.
const MAX_TOKEN_BYTES: usize = 64;

/// Splits text into code-aware tokens (see the module docs).
pub fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut position = 0usize;
    let mut run_start: Option<usize> = None;
    let mut push_run = |start: usize, end: usize, out: &mut Vec<Token>| {
        let run = &text[start..end];
        if run.len() > MAX_TOKEN_BYTES {
            return;
        }
        let parts = split_identifier(run);
        if parts.len() > 1 {
            let joined: String = parts.iter().map(|(_, _, p)| p.as_str()).collect();
            out.push(Token {
                offset_from: start,
                offset_to: end,
                position,
                text: joined,
                position_length: parts.len(),
            });
        }
        for (from, to, part) in parts {
            out.push(Token {
                offset_from: start + from,
                offset_to: start + to,
                position,
                text: part,
                position_length: 1,
            });
            position += 1;
        }
    };
    for (i, c) in text.char_indices() {
        if c.is_alphanumeric() || c == '_' {
            if run_start.is_none() {
                run_start = Some(i);
            }
        } else if let Some(start) = run_start.take() {
            push_run(start, i, &mut out);
        }
    }
    if let Some(start) = run_start {
        push_run(start, text.len(), &mut out);
    }
    out
}

/// The parts of one identifier run, lowercased, with their byte offsets.
fn split_identifier(run: &str) -> Vec<(usize, usize, String)> {
    let chars: Vec<(usize, char)> = run.char_indices().collect();
    let mut parts = Vec::new();
    let mut start: Option<usize> = None;
    for (k, &(i, c)) in chars.iter().enumerate() {
        if c == '_' {
            if let Some(s) = start.take() {
                parts.push((s, i));
            }
            continue;
        }
        let Some(s) = start else {
            start = Some(i);
            continue;
        };
        let prev = chars[k - 1].1;
        let next = chars.get(k + 1).map(|&(_, n)| n);
        let boundary = (prev.is_lowercase() && c.is_uppercase())
            || (prev.is_uppercase() && c.is_uppercase() && next.is_some_and(char::is_lowercase));
        if boundary {
            parts.push((s, i));
            start = Some(i);
        }
    }
    if let Some(s) = start {
        parts.push((s, run.len()));
    }
    parts
        .into_iter()
        .map(|(s, e)| (s, e, run[s..e].to_lowercase()))
        .collect()
}

/// The distinct terms of a query, in order.
pub fn query_terms(query: &str) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    for token in tokens(query) {
        if !terms.contains(&token.text) {
            terms.push(token.text);
        }
    }
    terms
}

/// The tantivy side of [`tokens`].
#[derive(Clone, Debug, Default)]
pub struct CodeTokenizer;

#[derive(Debug)]
pub struct CodeTokenStream {
    tokens: Vec<Token>,
    next: usize,
}

impl Tokenizer for CodeTokenizer {
    type TokenStream<'a> = CodeTokenStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> CodeTokenStream {
        CodeTokenStream {
            tokens: tokens(text),
            next: 0,
        }
    }
}

impl TokenStream for CodeTokenStream {
    fn advance(&mut self) -> bool {
        if self.next < self.tokens.len() {
            self.next += 1;
            true
        } else {
            false
        }
    }

    fn token(&self) -> &Token {
        &self.tokens[self
            .next
            .saturating_sub(1)
            .min(self.tokens.len().saturating_sub(1))]
    }

    fn token_mut(&mut self) -> &mut Token {
        let i = self
            .next
            .saturating_sub(1)
            .min(self.tokens.len().saturating_sub(1));
        &mut self.tokens[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(text: &str) -> Vec<String> {
        tokens(text).into_iter().map(|t| t.text).collect()
    }

    #[test]
    fn naming_styles_meet() {
        assert_eq!(texts("parseConfig"), ["parseconfig", "parse", "config"]);
        assert_eq!(texts("parse_config"), ["parseconfig", "parse", "config"]);
        assert_eq!(texts("ParseConfig"), ["parseconfig", "parse", "config"]);
        assert_eq!(texts("PARSE_CONFIG"), ["parseconfig", "parse", "config"]);
        assert_eq!(texts("config"), ["config"]);
        assert_eq!(texts("HTTPServer2"), ["httpserver2", "http", "server2"]);
        assert_eq!(texts("__init__"), ["init"]);
    }

    #[test]
    fn punctuation_separates_and_offsets_point_into_the_text() {
        let text = "fn load_user(id: u32) -> User";
        let toks = tokens(text);
        let words: Vec<&str> = toks.iter().map(|t| &text[t.offset_from..t.offset_to]).collect();
        assert_eq!(words, ["fn", "load_user", "load", "user", "id", "u32", "User"]);
        assert_eq!(query_terms("load user loadUser"), ["load", "user", "loaduser"]);
        assert!(tokens(&"a".repeat(100)).is_empty(), "blobs are dropped");
    }
}
