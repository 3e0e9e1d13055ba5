//! `isolation-collector demo`: the collector against the built-in simulator. (Filled in when the
//! simulator lands.)

pub async fn run(
    _events: usize,
    _dir: &std::path::Path,
    _follow: bool,
    _quiet: bool,
) -> anyhow::Result<bool> {
    anyhow::bail!("the demo needs the simulator")
}
