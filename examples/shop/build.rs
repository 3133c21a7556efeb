//! Embeds the SQL migrations of `migrations/` (files named
//! `NNNN_<what>.sql`) in the shop library: writes `$OUT_DIR/migrations.rs`,
//! the list `shop::store` hands to sqlx's migrator. Adding a file is enough
//! to have it run; a badly named one fails the build.

use std::{
    env,
    error::Error,
    fmt::Write as _,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

fn main() -> Result<(), Box<dyn Error>> {
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("migrations");
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "cargo:rerun-if-changed={}", dir.display())?;
    let mut found = migrations(&dir)?;
    found.sort_by_key(|(version, _, _)| *version);
    if let Some(pair) = found.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        return Err(format!(
            "migrations {} and {} have the same version {}",
            pair[0].2.display(),
            pair[1].2.display(),
            pair[0].0
        )
        .into());
    }
    let mut out = String::from(
        "/// Every migration of `migrations/`: version, description, SQL.\n\
         pub(crate) const MIGRATIONS: &[(i64, &str, &str)] = &[\n",
    );
    for (version, description, path) in &found {
        writeln!(stdout, "cargo:rerun-if-changed={}", path.display())?;
        let path = path.to_str().ok_or("a migration path is not UTF-8")?;
        writeln!(
            out,
            "    ({version}, {description:?}, include_str!({path:?})),"
        )?;
    }
    out.push_str("];\n");
    fs::write(
        PathBuf::from(env::var("OUT_DIR")?).join("migrations.rs"),
        out,
    )?;
    Ok(())
}

/// One migration file: version, description, path.
type Found = (i64, String, PathBuf);

/// The migration files in `dir` (any `.sql` file).
fn migrations(dir: &Path) -> Result<Vec<Found>, Box<dyn Error>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(".sql") else {
            continue;
        };
        let parsed = stem
            .split_once('_')
            .and_then(|(version, what)| Some((version.parse::<i64>().ok()?, what)))
            .filter(|(_, what)| !what.is_empty());
        let Some((version, what)) = parsed else {
            return Err(format!(
                "migration `{name}`: expected a name like `0200_users.sql` (NNNN_<what>.sql)"
            )
            .into());
        };
        found.push((version, what.replace('_', " "), path));
    }
    Ok(found)
}
