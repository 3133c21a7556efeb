//! The users service: both versions over one table, owner checks,
//! validation, duplicates, pagination.

use std::time::Duration;

use shop_proto::users::{v1, v2};
use tonic::Code;

use crate::{
    both,
    support::{Clients, Kind, TestDb, authed, clients, refused, service_token, start_node, token},
};

fn create_v1(id: &str, email: &str, name: &str) -> v1::CreateUserRequest {
    v1::CreateUserRequest {
        id: id.into(),
        email: email.into(),
        name: name.into(),
    }
}

/// Only one's own profile may change; a deleted one is gone for good.
async fn strangers_and_the_departed(c: &mut Clients, alice_token: &str, bob_id: &str) {
    let other = v1::UpdateUserRequest {
        id: bob_id.into(),
        name: "Mallory".into(),
    };
    refused(
        c.v1.update_user(authed(alice_token, other)).await,
        Code::PermissionDenied,
        "your own",
    );
    let other = v2::DeleteUserRequest { id: bob_id.into() };
    refused(
        c.v2.delete_user(authed(alice_token, other)).await,
        Code::PermissionDenied,
        "your own",
    );

    c.v1.delete_user(authed(
        alice_token,
        v1::DeleteUserRequest { id: "alice".into() },
    ))
    .await
    .unwrap();
    let gone =
        c.v2.get_user(authed(
            alice_token,
            v2::GetUserRequest { id: "alice".into() },
        ))
        .await;
    refused(gone, Code::NotFound, "alice");
    let again =
        c.v1.delete_user(authed(
            alice_token,
            v1::DeleteUserRequest { id: "alice".into() },
        ))
        .await;
    refused(again, Code::NotFound, "alice");
    let ghost = v1::UpdateUserRequest {
        id: "alice".into(),
        name: "Ghost".into(),
    };
    refused(
        c.v1.update_user(authed(alice_token, ghost)).await,
        Code::NotFound,
        "alice",
    );
}

async fn crud_across_versions(kind: Kind) {
    let test = TestDb::new(kind).await;
    let node = start_node(&test.db).await;
    let mut c = clients(&node).await;
    let auth = service_token();
    let alice_token = token("alice", "");

    let alice =
        c.v1.create_user(authed(
            &auth,
            create_v1("alice", " Alice@Example.COM ", " Alice "),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (alice.id.as_str(), alice.email.as_str(), alice.name.as_str()),
        ("alice", "alice@example.com", "Alice")
    );
    assert!(
        humantime::parse_rfc3339(&alice.created_at).is_ok(),
        "{}",
        alice.created_at
    );

    // users.v2 serves the same row, the name as display_name.
    let seen =
        c.v2.get_user(authed(
            &alice_token,
            v2::GetUserRequest { id: "alice".into() },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen.display_name, "Alice");
    assert_eq!(seen.created_at, alice.created_at);
    assert_eq!(seen.email, "alice@example.com", "her own profile");

    // Without an id, one is made.
    let bob =
        c.v2.create_user(authed(
            &auth,
            v2::CreateUserRequest {
                id: String::new(),
                email: "bob@example.com".into(),
                display_name: "Bob".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!bob.id.is_empty());

    // Renamed through v2, seen through v1.
    let renamed =
        c.v2.update_user(authed(
            &alice_token,
            v2::UpdateUserRequest {
                id: "alice".into(),
                display_name: "Alice A.".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.display_name, "Alice A.");
    let seen =
        c.v1.get_user(authed(
            &alice_token,
            v1::GetUserRequest { id: "alice".into() },
        ))
        .await
        .unwrap();
    assert_eq!(seen.into_inner().name, "Alice A.");

    strangers_and_the_departed(&mut c, &alice_token, &bob.id).await;
    assert_eq!(test.count("users").await, 1);

    // The auth service's token deletes any user (the user of a sign-up
    // that failed after users made it); a user's own token may not.
    c.v1.delete_user(authed(&auth, v1::DeleteUserRequest { id: bob.id.clone() }))
        .await
        .unwrap();
    assert_eq!(test.count("users").await, 0);
    refused(
        c.v1.delete_user(authed(&auth, v1::DeleteUserRequest { id: bob.id.clone() }))
            .await,
        Code::NotFound,
        &bob.id,
    );

    node.shutdown().await.unwrap();
    test.finish().await;
}
both!(
    users_crud_works_across_both_versions,
    super::crud_across_versions
);

async fn emails_are_personal(kind: Kind) {
    let test = TestDb::new(kind).await;
    let node = start_node(&test.db).await;
    let mut c = clients(&node).await;
    let auth = service_token();
    for (id, email, name) in [
        ("alice", "alice@example.com", "Alice"),
        ("bob", "bob@example.com", "Bob"),
    ] {
        c.v1.create_user(authed(&auth, create_v1(id, email, name)))
            .await
            .unwrap();
    }
    let bob = v1::User {
        id: "bob".into(),
        ..v1::User::default()
    };
    // An email is personal: Bob sees Alice's profile without it, on both
    // versions and in the list; she and the auth service see it.
    let bob_token = token(&bob.id, "");
    let alice_by_bob =
        c.v1.get_user(authed(
            &bob_token,
            v1::GetUserRequest { id: "alice".into() },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (alice_by_bob.name.as_str(), alice_by_bob.email.as_str()),
        ("Alice", "")
    );
    let alice_by_bob =
        c.v2.get_user(authed(
            &bob_token,
            v2::GetUserRequest { id: "alice".into() },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(alice_by_bob.email, "");
    let listed =
        c.v1.list_users(authed(&bob_token, v1::ListUsersRequest::default()))
            .await
            .unwrap()
            .into_inner();
    let emails: Vec<(&str, &str)> = listed
        .users
        .iter()
        .map(|user| (user.id.as_str(), user.email.as_str()))
        .collect();
    assert!(emails.contains(&("alice", "")), "{emails:?}");
    assert!(
        emails.contains(&(bob.id.as_str(), "bob@example.com")),
        "{emails:?}"
    );
    let alice_by_auth =
        c.v1.get_user(authed(&auth, v1::GetUserRequest { id: "alice".into() }))
            .await
            .unwrap()
            .into_inner();
    assert_eq!(alice_by_auth.email, "alice@example.com");

    node.shutdown().await.unwrap();
    test.finish().await;
}
both!(
    users_keep_their_emails_to_themselves,
    super::emails_are_personal
);

/// Every malformed field is refused with a message naming it.
async fn bad_fields(c: &mut Clients, auth: &str, alice_token: &str) {
    for email in [
        "",
        "no-at-sign",
        "a@b",
        "a b@c.de",
        "@c.de",
        "a@@c.de",
        "a@c..de",
        "a@c.de.",
    ] {
        let bad =
            c.v1.create_user(authed(auth, create_v1("", email, "Name")))
                .await;
        refused(bad, Code::InvalidArgument, "email");
    }
    let long = "é".repeat(101);
    for name in ["", "   ", long.as_str()] {
        let bad =
            c.v1.create_user(authed(auth, create_v1("", "n@example.com", name)))
                .await;
        refused(
            bad,
            Code::InvalidArgument,
            "name must be 1 to 100 characters",
        );
        let bad =
            c.v2.create_user(authed(
                auth,
                v2::CreateUserRequest {
                    id: String::new(),
                    email: "n@example.com".into(),
                    display_name: name.into(),
                },
            ))
            .await;
        refused(
            bad,
            Code::InvalidArgument,
            "display_name must be 1 to 100 characters",
        );
    }
    // Invisible format characters: an address or a name that looks like
    // another's, or empty.
    for (email, name) in [
        ("ad\u{200b}a@example.com", "Ada"),
        ("ada@example.com\u{2060}", "Ada"),
        ("f@example.com", "\u{200b}"),
        ("f@example.com", "Ada\u{202e}nimda"),
        ("f@example.com", "A\u{ad}da"),
    ] {
        let bad =
            c.v1.create_user(authed(auth, create_v1("", email, name)))
                .await;
        refused(bad, Code::InvalidArgument, "invisible format characters");
    }
    let bad =
        c.v1.create_user(authed(auth, create_v1("has space", "s@example.com", "S")))
            .await;
    refused(bad, Code::InvalidArgument, "id must be");
    let bad =
        c.v1.get_user(authed(
            alice_token,
            v1::GetUserRequest { id: String::new() },
        ))
        .await;
    refused(bad, Code::InvalidArgument, "id is required");
    let bad =
        c.v1.update_user(authed(
            alice_token,
            v1::UpdateUserRequest {
                id: "alice".into(),
                name: String::new(),
            },
        ))
        .await;
    refused(bad, Code::InvalidArgument, "name must be");
}

async fn refusals(kind: Kind) {
    let test = TestDb::new(kind).await;
    let node = start_node(&test.db).await;
    let mut c = clients(&node).await;
    let auth = service_token();
    let alice_token = token("alice", "");
    let mut created = node
        .handle()
        .bus()
        .subscribe("users.created")
        .await
        .unwrap();
    c.v1.create_user(authed(
        &auth,
        create_v1("alice", "alice@example.com", "Alice"),
    ))
    .await
    .unwrap();

    let anonymous =
        c.v1.get_user(v1::GetUserRequest { id: "alice".into() })
            .await;
    assert_eq!(anonymous.unwrap_err().code(), Code::Unauthenticated);
    let no_scope =
        c.v1.create_user(authed(&alice_token, create_v1("", "x@example.com", "X")))
            .await;
    assert_eq!(no_scope.unwrap_err().code(), Code::PermissionDenied);

    let taken =
        c.v1.create_user(authed(&auth, create_v1("", "ALICE@example.com", "Other")))
            .await;
    refused(taken, Code::AlreadyExists, "email alice@example.com");
    let taken =
        c.v1.create_user(authed(
            &auth,
            create_v1("alice", "new@example.com", "Other"),
        ))
        .await;
    refused(taken, Code::AlreadyExists, "id alice");
    let taken =
        c.v1.create_user(authed(
            &auth,
            create_v1("alice", "alice@example.com", "Other"),
        ))
        .await;
    refused(taken, Code::AlreadyExists, "email alice@example.com");
    // The same user asked for again (a caller whose answer was lost): the
    // user, not an error, and no second user or event.
    let again =
        c.v1.create_user(authed(
            &auth,
            create_v1("alice", "alice@example.com", "Alice"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((again.id.as_str(), again.name.as_str()), ("alice", "Alice"));

    bad_fields(&mut c, &auth, &alice_token).await;

    // 100 characters of any width are fine.
    let max = "é".repeat(100);
    c.v1.create_user(authed(&auth, create_v1("", "max@example.com", &max)))
        .await
        .unwrap();

    // Nothing half-written: two users, and their two events only.
    assert_eq!(test.count("users").await, 2);
    for email in ["alice@example.com", "max@example.com"] {
        let event = tokio::time::timeout(Duration::from_secs(10), created.next()).await;
        let event = event.unwrap().unwrap().decode::<v1::UserEvent>().unwrap();
        assert_eq!(event.email, email);
    }
    let more = tokio::time::timeout(Duration::from_millis(1500), created.next()).await;
    assert!(more.is_err(), "no event for a refused request: {more:?}");
    crate::support::eventually("the outbox is empty", || async {
        test.count("users_outbox").await == 0
    })
    .await;
    node.shutdown().await.unwrap();
    test.finish().await;
}
both!(
    users_refuse_bad_input_duplicates_and_strangers,
    super::refusals
);

async fn pagination(kind: Kind) {
    let test = TestDb::new(kind).await;
    let node = start_node(&test.db).await;
    let mut c = clients(&node).await;
    let auth = service_token();
    let reader = token("reader", "");
    let mut created = Vec::new();
    for n in 0..25 {
        let user =
            c.v1.create_user(authed(
                &auth,
                create_v1("", &format!("user{n}@example.com"), &format!("User {n}")),
            ))
            .await
            .unwrap();
        created.push(user.into_inner().id);
    }

    let mut listed = Vec::new();
    let mut token = String::new();
    let mut sizes = Vec::new();
    loop {
        let page =
            c.v1.list_users(authed(
                &reader,
                v1::ListUsersRequest {
                    page_size: 10,
                    page_token: token.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        sizes.push(page.users.len());
        listed.extend(page.users.into_iter().map(|user| user.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        if sizes.len() == 1 {
            // A user added between pages shows up at the end, nothing repeats.
            let late =
                c.v1.create_user(authed(&auth, create_v1("", "late@example.com", "Late")))
                    .await
                    .unwrap();
            created.push(late.into_inner().id);
        }
    }
    assert_eq!(sizes, [10, 10, 6]);
    assert_eq!(listed, created, "every user once, in creation order");

    let default =
        c.v2.list_users(authed(&reader, v2::ListUsersRequest::default()))
            .await
            .unwrap()
            .into_inner();
    assert_eq!(default.users.len(), 20);
    assert!(!default.next_page_token.is_empty());
    let big =
        c.v1.list_users(authed(
            &reader,
            v1::ListUsersRequest {
                page_size: 101,
                page_token: String::new(),
            },
        ))
        .await;
    refused(big, Code::InvalidArgument, "page_size must be 0 to 100");
    let forged = v2::ListUsersRequest {
        page_size: 5,
        page_token: "not-a-token".into(),
    };
    refused(
        c.v2.list_users(authed(&reader, forged)).await,
        Code::InvalidArgument,
        "page_token",
    );

    node.shutdown().await.unwrap();
    test.finish().await;
}
both!(users_are_listed_page_by_page, super::pagination);

/// Users created in the same microsecond are told apart by their ids: pages
/// of them neither repeat nor skip one.
async fn pagination_through_ties(kind: Kind) {
    let test = TestDb::new(kind).await;
    let same = "2026-11-26T05:00:00.000000Z";
    for (id, created_at) in [
        ("a0", "2026-11-26T04:59:59.999999Z"),
        ("b3", same),
        ("b1", same),
        ("b2", same),
        ("c0", "2026-11-26T05:00:00.000001Z"),
    ] {
        sqlx::query(
            "INSERT INTO users (id, email, name, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(id)
        .bind(format!("{id}@example.com"))
        .bind("Tied")
        .bind(created_at)
        .execute(test.db.pool())
        .await
        .unwrap();
    }
    let node = start_node(&test.db).await;
    let mut c = clients(&node).await;
    let reader = token("reader", "");
    let (mut listed, mut page_token) = (Vec::new(), String::new());
    loop {
        let request = v1::ListUsersRequest {
            page_size: 2,
            page_token,
        };
        let page =
            c.v1.list_users(authed(&reader, request))
                .await
                .unwrap()
                .into_inner();
        listed.extend(page.users.into_iter().map(|user| user.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(listed, ["a0", "b1", "b2", "b3", "c0"]);
    node.shutdown().await.unwrap();
    test.finish().await;
}
both!(
    users_created_at_once_are_paged_by_id,
    super::pagination_through_ties
);
