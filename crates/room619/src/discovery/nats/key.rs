//! The key of an instance in the bucket, `<service>.<instance-id>`, and
//! whether NATS can store it.

use crate::{Error, Result, discovery::Instance};

/// The key of `instance` in the bucket.
pub(super) fn of(instance: &Instance) -> String {
    format!("{}.{}", instance.name(), instance.id())
}

/// `InvalidArgument`, naming the part at fault, when NATS cannot store
/// `instance` under [its key](of). async-nats takes keys of ASCII letters,
/// digits, `-`, `_`, `/`, `=` and `.`, neither starting nor ending with `.`
/// (it refuses any other put, every time), and the server delivers nothing
/// to a subject with an empty token (`users..id`). The id, the key's last
/// token (the one a deletion is read back by), takes no `.`, `/` or `=`.
pub(super) fn check(instance: &Instance) -> Result<()> {
    let id = instance.id();
    let valid_id = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    if !valid_id {
        return Err(Error::invalid_argument(format!(
            "instance id `{id}` must be letters, digits, `-` or `_` for NATS discovery"
        )));
    }
    let name = instance.name();
    let problem = if name.is_empty() {
        Some("it is empty".to_owned())
    } else if let Some(bad) = name
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/' | '=' | '.')))
    {
        Some(format!("{bad:?} is not allowed"))
    } else if name.starts_with('.') || name.ends_with('.') || name.contains("..") {
        Some("a `.` may not start or end it, nor follow another `.`".to_owned())
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(Error::invalid_argument(format!(
            "service name `{name}` cannot be a NATS discovery key ({problem}): use letters, \
             digits, `-`, `_`, `/`, `=` and `.` (not first, last or twice in a row)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::check;
    use crate::{ErrorKind, discovery::Instance};

    fn instance(name: &str, id: &str) -> Instance {
        Instance::new(name, "1.0.0".parse().unwrap(), "127.0.0.1:1").with_id(id)
    }

    #[test]
    fn keys_nats_stores_pass() {
        for name in [
            "users",
            "shop.users",
            "users-v2",
            "users_v2",
            "a/b=c",
            "Users9",
        ] {
            assert!(check(&instance(name, "a-1_B")).is_ok(), "{name}");
        }
    }

    #[test]
    fn keys_nats_refuses_name_the_part_at_fault() {
        for (name, part) in [
            ("users v2", "' '"),
            ("users@eu", "'@'"),
            ("usérs", "'é'"),
            ("users>", "'>'"),
            ("users*", "'*'"),
            ("", "empty"),
            (".users", "`.`"),
            ("users.", "`.`"),
            ("shop..users", "`.`"),
        ] {
            let err = check(&instance(name, "a1")).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{name}");
            assert!(err.message().contains(&format!("`{name}`")), "{err}");
            assert!(err.message().contains(part), "{name}: {err}");
        }
        for id in ["", "a.b", "a b", "a/b"] {
            let err = check(&instance("users", id)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{id}");
            assert!(err.message().contains("instance id"), "{err}");
        }
    }
}
