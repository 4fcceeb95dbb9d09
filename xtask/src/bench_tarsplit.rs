//! `cargo xtask bench tarsplit`: placeholder until the tarsplit engineer lands the real one.
pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("bench tarsplit is not written yet")
}
