//! Writes the fuzz target's seed corpus into the directory given as the only argument.

#[path = "harness.rs"]
#[allow(dead_code)]
mod harness;

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| String::from("corpus/frames"));
    std::fs::create_dir_all(&dir)?;
    for (i, seed) in harness::seeds().iter().enumerate() {
        std::fs::write(format!("{dir}/seed-{i:02}"), seed)?;
    }
    Ok(())
}
