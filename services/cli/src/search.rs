//! `reporunner index`, `reporunner search` and `reporunner models`: code
//! search over a run's workspace, embedded unless `--server` (see
//! [`crate::run`] for the two modes).

use clap::{Args, Subcommand, ValueEnum};
use futures::StreamExt as _;
use reporunner_error::ServiceError as _;
use reporunner_proto::{
    common::v1::IndexMode,
    index::v1::SearchHit,
    orchestrator::v1::{IndexWorkspaceRequest, ListRunsRequest, SearchRequest, SearchResponse},
};

use crate::{
    Settings,
    account::{ClientArgs, Output},
    run::Connection,
    session::describe,
};

/// The index modes, on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModeArg {
    /// BM25 over code-aware tokens.
    Text,
    /// Embeddings (needs an installed model and a tier that includes it).
    Vector,
    /// Text and vector rankings fused.
    Hybrid,
}

impl From<ModeArg> for IndexMode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::Text => IndexMode::Text,
            ModeArg::Vector => IndexMode::Vector,
            ModeArg::Hybrid => IndexMode::Hybrid,
        }
    }
}

/// `reporunner index` options.
#[derive(Args, Debug)]
pub struct IndexArgs {
    /// A run id (or a prefix of one), or a workspace id (`sha256:...`) of yours.
    pub target: String,
    /// The mode to index for (default: the best your tier and this host allow).
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// The embedding model (a name under `<data>/models`, or small/base/large).
    #[arg(long)]
    pub model: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `reporunner search` options.
#[derive(Args, Debug)]
pub struct SearchArgs {
    /// What to look for: words, identifiers, or a description (vector modes).
    pub query: String,
    /// A run id (or a prefix of one) or a workspace id (default: what `reporunner index`
    /// indexed last here, else your newest run with a workspace).
    #[arg(long = "in", value_name = "RUN_OR_WORKSPACE")]
    pub target: Option<String>,
    /// The mode to search in (default: the best your tier and this host allow).
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Only files of this language, e.g. python.
    #[arg(long)]
    pub lang: Option<String>,
    /// Only paths matching this glob, e.g. 'src/**/*.rs'.
    #[arg(long)]
    pub path: Option<String>,
    /// How many hits (1 to 100).
    #[arg(short = 'k', long = "limit", default_value_t = 10)]
    pub limit: u32,
    /// Refuse (PERMISSION_DENIED) rather than fall back when your tier lacks the mode.
    #[arg(long)]
    pub strict: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `reporunner models` commands (this host's `<data>/models`).
#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// The installed embedding models.
    List,
    /// Download a model from the Hugging Face hub into `<data>/models/NAME`.
    Fetch { name: String },
}

/// `(run_id, workspace_id)` for a target argument.
fn target(text: &str) -> (String, String) {
    if text.starts_with("sha256:") {
        (String::new(), text.to_owned())
    } else {
        (text.to_owned(), String::new())
    }
}

fn mode_name(mode: i32) -> String {
    IndexMode::try_from(mode)
        .unwrap_or(IndexMode::Unspecified)
        .as_str_name()
        .trim_start_matches("INDEX_MODE_")
        .to_ascii_lowercase()
}

/// `reporunner index`.
pub async fn index(settings: &Settings, args: IndexArgs) -> anyhow::Result<()> {
    let mut connection = Connection::open(settings, args.client.server.clone(), "index").await?;
    let result = index_on(&mut connection, &args).await;
    connection.close().await?;
    let indexed = result?;
    // `search` without --in looks here next.
    if let Err(err) = LastIndexed::remember(&place(settings, &args.client), &indexed) {
        eprintln!("note: cannot remember the index for `reporunner search`: {err:#}");
    }
    Ok(())
}

/// Where a command works: its server, or this machine's data directory.
fn place(settings: &Settings, client: &ClientArgs) -> String {
    match &client.server {
        Some(server) => server.trim_end_matches('/').to_owned(),
        None => format!("data-dir:{}", settings.data_dir.display()),
    }
}

/// The target each place indexed last, in `last-index.json` beside the
/// stored login.
struct LastIndexed;

impl LastIndexed {
    fn path() -> anyhow::Result<std::path::PathBuf> {
        Ok(crate::credentials::default_path()?.with_file_name("last-index.json"))
    }

    fn read() -> std::collections::BTreeMap<String, String> {
        Self::path()
            .ok()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default()
    }

    fn remember(place: &str, target: &str) -> anyhow::Result<()> {
        let path = Self::path()?;
        let mut known = Self::read();
        known.insert(place.to_owned(), target.to_owned());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, serde_json::to_string_pretty(&known)?)?;
        Ok(())
    }

    fn recall(place: &str) -> Option<String> {
        Self::read().remove(place)
    }
}

/// Indexes the target; answers it as `search --in` takes it.
async fn index_on(connection: &mut Connection, args: &IndexArgs) -> anyhow::Result<String> {
    let given = if args.target.starts_with("sha256:") {
        args.target.clone()
    } else {
        crate::run::resolve_run_id(connection, &args.target).await?
    };
    let (run_id, workspace_id) = target(&given);
    let request = connection
        .request(IndexWorkspaceRequest {
            run_id,
            workspace_id,
            mode: args.mode.map_or(IndexMode::Unspecified, IndexMode::from) as i32,
            embedding_model: args.model.clone().unwrap_or_default(),
        })
        .await?;
    let mut stream = connection
        .client
        .index_workspace(request)
        .await
        .map_err(describe)?
        .into_inner();
    let json = matches!(args.client.output, Output::Json);
    let mut told = false;
    while let Some(message) = stream.next().await {
        let message = message.map_err(describe)?;
        if !told && !message.fallback_reason.is_empty() {
            eprintln!(
                "note: indexing for {} search: {}",
                mode_name(message.mode),
                message.fallback_reason
            );
            told = true;
        }
        if json {
            crate::outln!("{}", reporunner_proto::json::to_string(&message)?)?;
        } else if message.done {
            let p = message.progress.unwrap_or_default();
            let modes: Vec<String> = message.modes.iter().map(|&m| mode_name(m)).collect();
            crate::outln!(
                "indexed: {} file(s) seen, {} indexed, {} unchanged, {} removed, {} skipped; {} chunk(s){}",
                p.files_seen,
                p.files_indexed,
                p.files_unchanged,
                p.files_removed,
                p.files_skipped,
                p.chunks,
                if p.chunks_embedded > 0 {
                    format!(", {} embedded with {}", p.chunks_embedded, message.model)
                } else {
                    String::new()
                }
            )?;
            crate::outln!("modes: {}", modes.join(", "))?;
        }
        if message.done {
            return Ok(given);
        }
    }
    anyhow::bail!("the indexer ended without its final message")
}

/// `reporunner search`.
pub async fn search(settings: &Settings, args: SearchArgs) -> anyhow::Result<()> {
    if !(1..=100).contains(&args.limit) {
        anyhow::bail!("-k must be between 1 and 100");
    }
    let mut connection = Connection::open(settings, args.client.server.clone(), "search").await?;
    let last = LastIndexed::recall(&place(settings, &args.client));
    let result = search_on(&mut connection, &args, last).await;
    connection.close().await?;
    let response = result?;
    if !response.fallback_reason.is_empty() {
        eprintln!(
            "note: served {} search: {}",
            mode_name(response.mode),
            response.fallback_reason
        );
    }
    match args.client.output {
        Output::Json => crate::outln!("{}", reporunner_proto::json::to_string_pretty(&response)?)?,
        Output::Table => {
            eprintln!("mode: {}", mode_name(response.mode));
            crate::out!("{}", hits(&response.hits))?;
        }
    }
    Ok(())
}

async fn search_on(
    connection: &mut Connection,
    args: &SearchArgs,
    last_indexed: Option<String>,
) -> anyhow::Result<SearchResponse> {
    let (run_id, workspace_id) = match (&args.target, last_indexed) {
        (Some(text), _) if text.starts_with("sha256:") => target(text),
        (Some(text), _) => (crate::run::resolve_run_id(connection, text).await?, String::new()),
        (None, Some(last)) => target(&last),
        (None, None) => (newest_run_with_workspace(connection).await?, String::new()),
    };
    let request = connection
        .request(SearchRequest {
            run_id,
            workspace_id,
            query: args.query.clone(),
            mode: args.mode.map_or(IndexMode::Unspecified, IndexMode::from) as i32,
            path_glob: args.path.clone().unwrap_or_default(),
            language: args.lang.clone().unwrap_or_default(),
            limit: args.limit,
            strict: args.strict,
        })
        .await?;
    Ok(connection
        .client
        .search(request)
        .await
        .map_err(describe)?
        .into_inner())
}

/// The caller's newest run that has a workspace.
async fn newest_run_with_workspace(connection: &mut Connection) -> anyhow::Result<String> {
    let request = connection
        .request(ListRunsRequest {
            page_size: 50,
            page_token: String::new(),
            states: Vec::new(),
        })
        .await?;
    let runs = connection
        .client
        .list_runs(request)
        .await
        .map_err(describe)?
        .into_inner()
        .runs;
    runs.into_iter()
        .find(|r| r.workspace.as_ref().is_some_and(|w| !w.id.is_empty()))
        .map(|r| r.id)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "you have no run with a workspace; `reporunner run --goal analyze --index DIR` first, or pass --in RUN_OR_WORKSPACE"
            )
        })
}

/// Hits as `path:start-end  [lang] symbol`, each followed by its numbered
/// snippet lines.
pub fn hits(hits: &[SearchHit]) -> String {
    if hits.is_empty() {
        return "no hits\n".to_owned();
    }
    let mut out = String::new();
    for hit in hits {
        out.push_str(&format!("{}:{}-{}", hit.path, hit.start_line, hit.end_line));
        if !hit.language.is_empty() {
            out.push_str(&format!("  [{}]", hit.language));
        }
        if !hit.symbol.is_empty() {
            out.push_str(&format!(" {}", hit.symbol));
        }
        out.push('\n');
        for line in hit.snippet.lines() {
            out.push_str(&format!("    {line}\n"));
        }
        out.push('\n');
    }
    out
}

/// `reporunner models ...`, over this host's models directory.
pub async fn models(settings: &Settings, command: ModelsCommand, output: Output) -> anyhow::Result<()> {
    let config = settings.indexer_config();
    let err = |e: reporunner_indexer::IndexError| describe(e.to_status());
    match command {
        ModelsCommand::List => {
            let models = reporunner_indexer::models::list_models(&config.models_dir).map_err(err)?;
            match output {
                Output::Json => {
                    let rows: Vec<serde_json::Value> = models
                        .iter()
                        .map(|m| {
                            serde_json::json!({
                                "name": m.name,
                                "path": m.path.display().to_string(),
                                "dim": m.dim,
                                "sizeBytes": m.size_bytes,
                            })
                        })
                        .collect();
                    crate::outln!("{}", serde_json::to_string_pretty(&rows)?)?;
                }
                Output::Table if models.is_empty() => crate::outln!(
                    "no embedding model installed under {}; `reporunner models fetch {}` (or copy one there, see README \"Search\")",
                    config.models_dir.display(),
                    config.default_model
                )?,
                Output::Table => {
                    let rows: Vec<Vec<String>> = models
                        .iter()
                        .map(|m| {
                            vec![
                                m.name.clone(),
                                m.dim.to_string(),
                                format!("{:.1} MiB", m.size_bytes as f64 / (1024.0 * 1024.0)),
                                m.path.display().to_string(),
                            ]
                        })
                        .collect();
                    crate::out!(
                        "{}",
                        crate::output::table(&["MODEL", "DIM", "SIZE", "PATH"], &rows)
                    )?;
                }
            }
        }
        ModelsCommand::Fetch { name } => {
            let name = config.model_name(&name).to_owned();
            let model = reporunner_indexer::models::fetch_model(&config, &name)
                .await
                .map_err(err)?;
            crate::outln!(
                "installed {} ({} dimensions) in {}",
                model.name,
                model.dim,
                model.path.display()
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_hits_read_as_the_docs_say() {
        assert_eq!(target("sha256:ab").1, "sha256:ab");
        assert_eq!(target("0193-run").0, "0193-run");
        let text = hits(&[SearchHit {
            path: "src/app.py".into(),
            start_line: 3,
            end_line: 9,
            language: "python".into(),
            symbol: "create_app".into(),
            snippet: "   3| def create_app():\n   4|     return Flask(__name__)".into(),
            score: 1.0,
        }]);
        assert!(
            text.starts_with("src/app.py:3-9  [python] create_app\n"),
            "{text}"
        );
        assert!(text.contains("    4|     return Flask"), "{text}");
        assert_eq!(hits(&[]), "no hits\n");
        assert_eq!(mode_name(IndexMode::Hybrid as i32), "hybrid");
    }
}
