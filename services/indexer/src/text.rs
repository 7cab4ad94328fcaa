//! The text index: tantivy BM25 over the code-aware tokens of each chunk's
//! content, symbols and path, with language and path-glob filters, and
//! snippets with line numbers.

use std::{fmt::Write as _, path::Path};

use globset::GlobMatcher;
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term,
    collector::TopDocs,
    directory::MmapDirectory,
    query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery},
    schema::{
        FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
        Value as _,
    },
    tokenizer::TextAnalyzer,
};

use crate::{
    chunk::Chunk,
    error::{IndexError, Result},
    tokenize::{CODE_TOKENIZER, CodeTokenizer, query_terms},
};

/// Memory of the single indexing thread.
const WRITER_HEAP_BYTES: usize = 50_000_000;
/// Hits read before a path-glob filter, as a multiple of the limit.
const GLOB_OVERFETCH: usize = 20;
const MAX_FETCH: usize = 5_000;
/// Lines in a snippet.
const SNIPPET_LINES: usize = 8;
const SNIPPET_LINE_CHARS: usize = 200;

#[derive(Clone, Copy, Debug)]
struct Fields {
    item: Field,
    path: Field,
    path_tokens: Field,
    language: Field,
    symbol: Field,
    symbols: Field,
    content: Field,
    start_line: Field,
    end_line: Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let code = |stored: bool| {
        let options = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(CODE_TOKENIZER)
                .set_index_option(IndexRecordOption::WithFreqs),
        );
        if stored { options.set_stored() } else { options }
    };
    let fields = Fields {
        item: builder.add_u64_field("item", INDEXED | STORED | FAST),
        path: builder.add_text_field("path", STRING | STORED),
        path_tokens: builder.add_text_field("path_tokens", code(false)),
        language: builder.add_text_field("language", STRING | STORED),
        symbol: builder.add_text_field("symbol", STORED),
        symbols: builder.add_text_field("symbols", code(false)),
        content: builder.add_text_field("content", code(true)),
        start_line: builder.add_u64_field("start_line", STORED),
        end_line: builder.add_u64_field("end_line", STORED),
    };
    (builder.build(), fields)
}

/// One chunk found by the text index (or looked up by item id).
#[derive(Clone, Debug, PartialEq)]
pub struct TextHit {
    pub item: u32,
    pub path: String,
    pub language: String,
    pub symbol: String,
    pub start_line: u32,
    pub end_line: u32,
    pub content: String,
    pub score: f32,
}

/// Filters every search mode applies.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    pub language: Option<String>,
    pub path_glob: Option<GlobMatcher>,
}

impl Filters {
    pub fn is_empty(&self) -> bool {
        self.language.is_none() && self.path_glob.is_none()
    }

    pub fn accepts(&self, path: &str, language: &str) -> bool {
        self.language.as_deref().is_none_or(|l| l == language)
            && self.path_glob.as_ref().is_none_or(|g| g.is_match(path))
    }
}

/// A tantivy index of one workspace.
pub struct TextIndex {
    index: Index,
    reader: IndexReader,
    fields: Fields,
}

impl std::fmt::Debug for TextIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextIndex").finish_non_exhaustive()
    }
}

/// What one chunk carries into the index.
#[derive(Clone, Copy, Debug)]
pub struct ChunkDoc<'a> {
    pub item: u32,
    pub path: &'a str,
    pub language: &'a str,
    pub chunk: &'a Chunk,
}

impl TextIndex {
    /// Opens the index in `dir`, creating it when empty.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(IndexError::io(format!("creating {}", dir.display())))?;
        let (schema, fields) = schema();
        let directory = MmapDirectory::open(dir).map_err(|e| IndexError::Backend(format!("tantivy: {e}")))?;
        let index = Index::open_or_create(directory, schema)?;
        index
            .tokenizers()
            .register(CODE_TOKENIZER, TextAnalyzer::from(CodeTokenizer));
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            index,
            reader,
            fields,
        })
    }

    /// A writer for one indexing pass (one thread: the machine is shared).
    pub fn writer(&self) -> Result<IndexWriter> {
        Ok(self.index.writer_with_num_threads(1, WRITER_HEAP_BYTES)?)
    }

    pub fn delete_path(&self, writer: &IndexWriter, path: &str) {
        writer.delete_term(Term::from_field_text(self.fields.path, path));
    }

    pub fn add(&self, writer: &IndexWriter, doc: ChunkDoc<'_>) -> Result<()> {
        let f = self.fields;
        let mut d = TantivyDocument::default();
        d.add_u64(f.item, u64::from(doc.item));
        d.add_text(f.path, doc.path);
        d.add_text(f.path_tokens, doc.path);
        d.add_text(f.language, doc.language);
        d.add_text(f.symbol, &doc.chunk.symbol);
        d.add_text(f.symbols, doc.chunk.symbols.join(" "));
        d.add_text(f.content, &doc.chunk.text);
        d.add_u64(f.start_line, u64::from(doc.chunk.start_line));
        d.add_u64(f.end_line, u64::from(doc.chunk.end_line));
        writer.add_document(d)?;
        Ok(())
    }

    /// Commits `writer` and makes its changes visible to searches.
    pub fn commit(&self, mut writer: IndexWriter) -> Result<()> {
        writer.commit()?;
        writer.wait_merging_threads()?;
        self.reader.reload()?;
        Ok(())
    }

    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// BM25 search: every query term may match the content (weight 1), the
    /// symbols (weight 3) or the path (weight 1.5).
    pub fn search(&self, query: &str, filters: &Filters, limit: usize) -> Result<Vec<TextHit>> {
        let terms = query_terms(query);
        if terms.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let f = self.fields;
        let mut should: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for term in &terms {
            for (field, boost) in [(f.content, 1.0), (f.symbols, 3.0), (f.path_tokens, 1.5)] {
                let q = TermQuery::new(Term::from_field_text(field, term), IndexRecordOption::WithFreqs);
                should.push((Occur::Should, Box::new(BoostQuery::new(Box::new(q), boost))));
            }
        }
        let text_query: Box<dyn Query> = Box::new(BooleanQuery::new(should));
        let query: Box<dyn Query> = match &filters.language {
            Some(language) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, text_query),
                (
                    Occur::Must,
                    Box::new(TermQuery::new(
                        Term::from_field_text(f.language, language),
                        IndexRecordOption::Basic,
                    )),
                ),
            ])),
            None => text_query,
        };
        let fetch = if filters.path_glob.is_some() {
            (limit * GLOB_OVERFETCH).min(MAX_FETCH)
        } else {
            limit
        };
        let searcher = self.reader.searcher();
        let top = searcher.search(&query, &TopDocs::with_limit(fetch).order_by_score())?;
        let mut hits = Vec::with_capacity(limit);
        for (score, address) in top {
            let hit = self.hit(&searcher, address, score)?;
            if filters.accepts(&hit.path, &hit.language) {
                hits.push(hit);
                if hits.len() == limit {
                    break;
                }
            }
        }
        Ok(hits)
    }

    /// The stored chunks of `items`, in the order given; unknown ids are left out.
    pub fn chunks(&self, items: &[u32]) -> Result<Vec<TextHit>> {
        let searcher = self.reader.searcher();
        let mut out = Vec::with_capacity(items.len());
        for &item in items {
            let q = TermQuery::new(
                Term::from_field_u64(self.fields.item, u64::from(item)),
                IndexRecordOption::Basic,
            );
            if let Some((_, address)) = searcher
                .search(&q, &TopDocs::with_limit(1).order_by_score())?
                .into_iter()
                .next()
            {
                out.push(self.hit(&searcher, address, 0.0)?);
            }
        }
        Ok(out)
    }

    fn hit(&self, searcher: &Searcher, address: DocAddress, score: f32) -> Result<TextHit> {
        let f = self.fields;
        let doc: TantivyDocument = searcher.doc(address)?;
        let text = |field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned()
        };
        let num = |field| {
            doc.get_first(field)
                .and_then(|v| v.as_u64())
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0)
        };
        Ok(TextHit {
            item: num(f.item),
            path: text(f.path),
            language: text(f.language),
            symbol: text(f.symbol),
            start_line: num(f.start_line),
            end_line: num(f.end_line),
            content: text(f.content),
            score,
        })
    }
}

/// Up to [`SNIPPET_LINES`] lines of `content` around the line that holds
/// most query terms, each prefixed with its line number (`  12| ...`).
pub fn snippet(content: &str, start_line: u32, query: &str) -> String {
    snippet_for_terms(content, start_line, &query_terms(query))
}

/// [`snippet`] with the query's terms ([`query_terms`]) already computed. A
/// line holds a term when its lowercased text contains it: the terms are the
/// code-aware tokenizer's lowercased parts and joined identifiers, so this
/// finds them without tokenizing every line of every hit.
pub fn snippet_for_terms(content: &str, start_line: u32, terms: &[String]) -> String {
    let lines: Vec<&str> = content.lines().collect();
    let mut lower = String::new();
    let mut best = (0usize, 0usize);
    for (i, line) in lines.iter().enumerate() {
        lower.clear();
        lower.extend(line.chars().flat_map(char::to_lowercase));
        let hits = terms.iter().filter(|t| lower.contains(String::as_str(t))).count();
        if hits > best.0 {
            best = (hits, i);
        }
    }
    let from = best.1.saturating_sub(2);
    let to = (from + SNIPPET_LINES).min(lines.len());
    let width = (start_line as usize + to).to_string().len();
    let mut out = String::new();
    for (k, line) in lines[from..to].iter().enumerate() {
        if k > 0 {
            out.push('\n');
        }
        let number = start_line as usize + from + k;
        let end = line
            .char_indices()
            .nth(SNIPPET_LINE_CHARS)
            .map_or(line.len(), |(at, _)| at);
        let _ = write!(out, "{number:>width$}| {}", &line[..end]);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn chunk(text: &str, symbol: &str, start: u32) -> Chunk {
        Chunk {
            start_line: start,
            end_line: start + u32::try_from(text.lines().count()).unwrap() - 1,
            symbol: symbol.into(),
            symbols: vec![symbol.into()],
            text: text.into(),
        }
    }

    #[test]
    fn identifiers_meet_across_styles_and_filters_apply() {
        let dir = tempfile::tempdir().unwrap();
        let index = TextIndex::open(dir.path()).unwrap();
        let writer = index.writer().unwrap();
        let a = chunk("def parse_config(path):\n    return path", "parse_config", 3);
        let b = chunk("function parseConfig(s) {\n  return s;\n}", "parseConfig", 10);
        let c = chunk("fn unrelated() {}", "unrelated", 1);
        for (item, path, language, c) in [
            (1, "app/config.py", "python", &a),
            (2, "web/config.ts", "typescript", &b),
            (3, "src/lib.rs", "rust", &c),
        ] {
            index
                .add(
                    &writer,
                    ChunkDoc {
                        item,
                        path,
                        language,
                        chunk: c,
                    },
                )
                .unwrap();
        }
        index.commit(writer).unwrap();
        for q in ["parseConfig", "parse_config", "config"] {
            let mut items: Vec<u32> = index
                .search(q, &Filters::default(), 10)
                .unwrap()
                .iter()
                .map(|h| h.item)
                .collect();
            items.sort_unstable();
            assert_eq!(items, [1, 2], "query {q}");
        }
        let python = Filters {
            language: Some("python".into()),
            path_glob: None,
        };
        let hits = index.search("config", &python, 10).unwrap();
        assert_eq!(hits.iter().map(|h| h.item).collect::<Vec<_>>(), [1]);
        let glob = Filters {
            language: None,
            path_glob: Some(globset::Glob::new("web/**").unwrap().compile_matcher()),
        };
        let hits = index.search("config", &glob, 10).unwrap();
        assert_eq!(hits.iter().map(|h| h.item).collect::<Vec<_>>(), [2]);
        assert_eq!(index.chunks(&[3, 99]).unwrap()[0].path, "src/lib.rs");

        let writer = index.writer().unwrap();
        index.delete_path(&writer, "web/config.ts");
        index.commit(writer).unwrap();
        assert_eq!(index.num_docs(), 2);
    }

    #[test]
    fn snippets_carry_line_numbers() {
        let content = "a\nb\nc\nd\nlet cfg = parseConfig(x);\ne\nf\ng\nh\ni\nj";
        let s = snippet(content, 10, "parse config");
        let first = s.lines().next().unwrap();
        assert_eq!(first, "12| c");
        assert!(s.contains("14| let cfg = parseConfig(x);"));
        assert_eq!(s.lines().count(), SNIPPET_LINES);
    }
}
