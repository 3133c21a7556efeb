//! `Config::from_toml_str`: any text parses or fails with a `ConfigError`
//! naming a key; it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use room619::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(err) = Config::from_toml_str(text) {
            // Every error renders.
            assert!(!err.to_string().is_empty());
        }
    }
});
