//! `users.created` / `users.deleted` through the outbox, and products
//! archived when their owner is deleted.

use shop_proto::{
    products::v1::{
        CreateProductRequest, DeleteProductRequest, GetProductRequest, ListProductsRequest,
        Product, UpdateProductRequest, products_client::ProductsClient,
    },
    users::v1::{self, UserEvent},
};
use tonic::transport::Channel;

use crate::{
    both,
    products::create,
    support::{
        Clients, Kind, TestDb, authed, clients, eventually, service_token, start_node,
        start_node_with, token,
    },
};

/// The next event on `subscription`: its subject and body.
async fn next_event(subscription: &mut room619::bus::Subscription) -> (String, UserEvent) {
    let message = tokio::time::timeout(std::time::Duration::from_secs(10), subscription.next())
        .await
        .expect("an event within 10 s")
        .expect("the subscription is open");
    (
        message.subject().to_owned(),
        message.decode::<UserEvent>().unwrap(),
    )
}

/// Creates users `ids` (`<id>@example.com`) through users v1, as a service.
async fn create_users(c: &mut Clients, auth: &str, ids: &[&str]) {
    for id in ids {
        let request = v1::CreateUserRequest {
            id: (*id).into(),
            email: format!("{id}@example.com"),
            name: (*id).into(),
        };
        c.v1.create_user(authed(auth, request)).await.unwrap();
    }
}

/// Waits until every queued event has gone out and its row is deleted.
async fn outbox_drained(test: &TestDb) {
    eventually("the outbox is empty", || async {
        test.count("users_outbox").await == 0
    })
    .await;
}

fn event(user_id: &str, email: &str) -> UserEvent {
    UserEvent {
        user_id: user_id.into(),
        email: email.into(),
    }
}

/// `(subject, event)` of `user`'s event `subject`.
fn about(subject: &str, user: &str) -> (String, UserEvent) {
    (
        subject.to_owned(),
        event(user, &format!("{user}@example.com")),
    )
}

/// The products of `owner_id` (everyone's when empty) a reader lists.
async fn list(
    client: &ProductsClient<Channel>,
    owner_id: &str,
    include_archived: bool,
) -> Vec<Product> {
    let request = ListProductsRequest {
        owner_id: owner_id.into(),
        include_archived,
        ..Default::default()
    };
    let mut client = client.clone();
    client
        .list_products(authed(&token("reader", ""), request))
        .await
        .unwrap()
        .into_inner()
        .products
}

/// The departed owner `token` can neither change nor delete `archived`
/// products.
async fn archived_stay_put(
    products: &mut ProductsClient<Channel>,
    token: &str,
    archived: &[Product],
) {
    let repriced = products
        .update_product(authed(
            token,
            UpdateProductRequest {
                id: archived[0].id.clone(),
                price_cents: Some(1),
                ..UpdateProductRequest::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(repriced.code(), tonic::Code::PermissionDenied);
    assert!(repriced.message().contains("archived"), "{repriced:?}");
    let deleted = products
        .delete_product(authed(
            token,
            DeleteProductRequest {
                id: archived[1].id.clone(),
                ..DeleteProductRequest::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(deleted.code(), tonic::Code::PermissionDenied);
}

async fn archived_on_owner_deletion(kind: Kind) {
    let test = TestDb::new(kind).await;
    let node = start_node(&test.db).await;
    let mut events = node.handle().bus().subscribe("users.>").await.unwrap();
    let mut c = clients(&node).await;
    let auth = service_token();
    create_users(&mut c, &auth, &["alice", "bob"]).await;
    assert_eq!(
        next_event(&mut events).await,
        about("users.created", "alice")
    );
    assert_eq!(next_event(&mut events).await, about("users.created", "bob"));

    let kept = create(&mut c.products, "bob", "Bob's lamp", 10).await;
    let mine = [
        create(&mut c.products, "alice", "Chair", 10).await,
        create(&mut c.products, "alice", "Desk", 20).await,
    ];
    let alice = token("alice", "");
    c.v1.delete_user(authed(&alice, v1::DeleteUserRequest { id: "alice".into() }))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut events).await,
        about("users.deleted", "alice")
    );

    let products = c.products.clone();
    eventually("alice's products are archived", || async {
        list(&products, "alice", false).await.is_empty()
    })
    .await;
    let archived = list(&products, "alice", true).await;
    assert_eq!(archived.len(), 2);
    for (now, before) in archived.iter().zip(&mine) {
        assert!(now.archived);
        assert_eq!(
            (&now.id, &now.name, now.price_cents),
            (&before.id, &before.name, before.price_cents)
        );
        assert_eq!(now.version, before.version + 1, "archiving is a change");
    }
    let one = c
        .products
        .get_product(authed(
            &alice,
            GetProductRequest {
                id: mine[0].id.clone(),
            },
        ))
        .await;
    assert!(
        one.unwrap().into_inner().archived,
        "archived products stay readable"
    );
    assert_eq!(
        list(&products, "", false).await,
        std::slice::from_ref(&kept)
    );
    // Alice's token is still valid, but she is gone: no new products.
    let refused = c
        .products
        .create_product(authed(
            &alice,
            CreateProductRequest {
                name: "Lamp".into(),
                description: "After the deletion".into(),
                price_cents: 5,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(refused.message().contains("was deleted"), "{refused:?}");
    assert_eq!(list(&products, "alice", true).await.len(), 2);
    // Nor changes or deletes her archived ones.
    archived_stay_put(&mut c.products, &alice, &mine).await;
    assert_eq!(list(&products, "alice", true).await, archived);

    // Handling the event again changes nothing (idempotent); then bob goes.
    let bus = node.handle().bus().clone();
    bus.publish("users.deleted", &about("", "alice").1)
        .await
        .unwrap();
    bus.publish("users.deleted", &about("", "bob").1)
        .await
        .unwrap();
    eventually("bob's products are archived", || async {
        list(&products, "bob", false).await.is_empty()
    })
    .await;
    assert_eq!(
        list(&products, "alice", true).await,
        archived,
        "archiving twice changes nothing"
    );

    outbox_drained(&test).await;
    node.shutdown().await.unwrap();
    test.finish().await;
}
both!(
    deleting_a_user_archives_their_products,
    super::archived_on_owner_deletion
);

/// Creations racing the deletion of their owner: each is refused, or made
/// in time to be archived; none stays listed.
async fn creations_race_their_owners_deletion(kind: Kind) {
    let test = TestDb::new(kind).await;
    let node = start_node(&test.db).await;
    let mut c = clients(&node).await;
    create_users(&mut c, &service_token(), &["carol"]).await;
    node.handle()
        .bus()
        .publish("users.deleted", &about("", "carol").1)
        .await
        .unwrap();
    let carol = token("carol", "");
    let mut made = 0;
    let refused = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let request = CreateProductRequest {
                name: format!("Racing {made}"),
                description: "Made while carol goes".into(),
                price_cents: 1,
            };
            match c.products.create_product(authed(&carol, request)).await {
                Ok(_) => made += 1,
                Err(status) => break status,
            }
        }
    })
    .await
    .expect("creations are refused once carol is deleted");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let products = c.products.clone();
    assert!(list(&products, "carol", false).await.is_empty());
    assert_eq!(list(&products, "carol", true).await.len(), made);
    node.shutdown().await.unwrap();
    test.finish().await;
}

both!(
    creations_racing_their_owners_deletion_stay_unlisted,
    super::creations_race_their_owners_deletion
);

/// Queues a `users.deleted` event about `user_id` as `id`, numbered `seq`
/// (0 for a row queued before events were numbered).
async fn queue(test: &TestDb, id: &str, user_id: &str, seq: i64) {
    sqlx::query(
        "INSERT INTO users_outbox (id, subject, user_id, email, created_at, seq) \
         VALUES ($1, 'users.deleted', $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(user_id)
    .bind(format!("{user_id}@example.com"))
    .bind(shop::store::timestamp())
    .bind(seq)
    .execute(test.db.pool())
    .await
    .unwrap();
}

async fn leftovers_are_relayed(kind: Kind) {
    let test = TestDb::new(kind).await;
    // What a process that died after committing left behind, its ids and
    // creation times in the opposite order of their numbers, and two rows
    // queued before events were numbered.
    let expected: Vec<String> = (0..40).map(|n| format!("user{n:02}")).collect();
    for (n, user) in expected.iter().enumerate().rev() {
        let seq = i64::try_from(n).unwrap() + 1;
        queue(&test, &format!("e-{:02}", 40 - n), user, seq).await;
    }
    queue(&test, "e-old-1", "dave", 0).await;
    queue(&test, "e-old-2", "erin", 0).await;
    let node = start_node(&test.db).await;
    let mut events = node
        .handle()
        .bus()
        .subscribe("users.deleted")
        .await
        .unwrap();

    // Both relays (users 1 and 2) take turns on the rows: each goes out
    // once, unnumbered ones first, then by number.
    let mut seen = Vec::new();
    for _ in 0..expected.len() + 2 {
        seen.push(next_event(&mut events).await.1.user_id);
    }
    let mut in_order = vec!["dave".to_owned(), "erin".to_owned()];
    in_order.extend(expected);
    assert_eq!(seen, in_order);
    let more = tokio::time::timeout(std::time::Duration::from_millis(1500), events.next()).await;
    assert!(more.is_err(), "published twice: {more:?}");
    outbox_drained(&test).await;
    node.shutdown().await.unwrap();
    test.finish().await;
}
both!(
    events_left_in_the_outbox_are_published_after_a_restart,
    super::leftovers_are_relayed
);

async fn refused_publishes_stay_queued(kind: Kind) {
    let test = TestDb::new(kind).await;
    // A listener that does not read fills its one-message queue; the bus
    // then refuses further events after 50 ms.
    let node = start_node_with(
        &test.db,
        "[bus]\ncapacity = 1\npublish_timeout = \"50ms\"\n",
    )
    .await;
    let mut stuck = node
        .handle()
        .bus()
        .subscribe("users.created")
        .await
        .unwrap();
    let mut c = clients(&node).await;
    let auth = service_token();
    create_users(&mut c, &auth, &["alice", "bob", "carol"]).await;
    eventually("the refused events wait in the outbox", || async {
        test.count("users_outbox").await == 2
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        test.count("users_outbox").await,
        2,
        "refused events are kept"
    );

    // Once the listener reads, the relay retries and each event arrives once, in order.
    for id in ["alice", "bob", "carol"] {
        assert_eq!(next_event(&mut stuck).await, about("users.created", id));
    }
    outbox_drained(&test).await;
    let more = tokio::time::timeout(std::time::Duration::from_millis(1500), stuck.next()).await;
    assert!(more.is_err(), "published twice: {more:?}");
    node.shutdown().await.unwrap();
    test.finish().await;
}
both!(
    events_the_bus_refuses_stay_in_the_outbox,
    super::refused_publishes_stay_queued
);

async fn another_instances_lease_is_waited_for(kind: Kind) {
    let test = TestDb::new(kind).await;
    // Another instance's relay is mid-pass: it holds the lease.
    sqlx::query("UPDATE users_outbox_relay SET holder = 'elsewhere', held_until = $1")
        .bind(shop::store::unix_millis() + 600_000)
        .execute(test.db.pool())
        .await
        .unwrap();
    let node = start_node(&test.db).await;
    let mut events = node
        .handle()
        .bus()
        .subscribe("users.created")
        .await
        .unwrap();
    let mut c = clients(&node).await;
    let auth = service_token();
    let users = ["alice", "bob", "carol", "dave"];
    create_users(&mut c, &auth, &users).await;
    let early = tokio::time::timeout(std::time::Duration::from_millis(1500), events.next()).await;
    assert!(early.is_err(), "published under another's lease: {early:?}");
    assert_eq!(test.count("users_outbox").await, 4, "the events wait");

    // Once that relay is gone (its lease released or run out), this node's
    // relays publish everything, in the order it was written.
    sqlx::query("UPDATE users_outbox_relay SET held_until = 0")
        .execute(test.db.pool())
        .await
        .unwrap();
    for id in users {
        assert_eq!(next_event(&mut events).await, about("users.created", id));
    }
    outbox_drained(&test).await;
    node.shutdown().await.unwrap();
    test.finish().await;
}
both!(
    events_wait_for_the_relay_holding_the_lease,
    super::another_instances_lease_is_waited_for
);
