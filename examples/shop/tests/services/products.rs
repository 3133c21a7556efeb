//! The products service: ownership, partial updates, validation, search
//! and pagination.

use shop_proto::products::v1::{
    CreateProductRequest, DeleteProductRequest, GetProductRequest, ListProductsRequest, Product,
    UpdateProductRequest, products_client::ProductsClient,
};
use tonic::{Code, transport::Channel};

use crate::{
    both,
    support::{Kind, TestDb, authed, clients, refused, start_node, token},
};

pub async fn create(
    client: &mut ProductsClient<Channel>,
    owner: &str,
    name: &str,
    price_cents: i64,
) -> Product {
    client
        .create_product(authed(
            &token(owner, ""),
            CreateProductRequest {
                name: name.into(),
                description: format!("About {name}"),
                price_cents,
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

/// Only the fields that are set change; a change that sets none is
/// refused, and leaves the product as it was (no new version).
async fn partial_updates(
    c: &mut ProductsClient<Channel>,
    widget: &Product,
    alice: &str,
    bob: &str,
) {
    for expected_version in [None, Some(widget.version)] {
        let nothing = UpdateProductRequest {
            id: widget.id.clone(),
            expected_version,
            ..Default::default()
        };
        refused(
            c.update_product(authed(alice, nothing)).await,
            Code::InvalidArgument,
            "nothing to change",
        );
    }
    let unchanged = c
        .get_product(authed(
            alice,
            GetProductRequest {
                id: widget.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&unchanged, widget);
    let cheaper = UpdateProductRequest {
        id: widget.id.clone(),
        price_cents: Some(0),
        ..Default::default()
    };
    let cheaper = c
        .update_product(authed(alice, cheaper))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (cheaper.price_cents, cheaper.name.as_str()),
        (0, "Blue Widget")
    );
    assert_eq!(cheaper.description, widget.description);
    assert!(cheaper.updated_at > widget.updated_at);
    assert_eq!(cheaper.version, widget.version + 1);
    let renamed = UpdateProductRequest {
        id: widget.id.clone(),
        name: Some("Green Widget".into()),
        description: Some(String::new()),
        ..Default::default()
    };
    let renamed = c
        .update_product(authed(alice, renamed))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            renamed.name.as_str(),
            renamed.description.as_str(),
            renamed.price_cents
        ),
        ("Green Widget", "", 0)
    );
    let found = c
        .list_products(authed(
            bob,
            ListProductsRequest {
                query: "green".into(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(found.unwrap().into_inner().products, [renamed]);
}

async fn unknown_ids_and_anonymous_callers(
    c: &mut ProductsClient<Channel>,
    widget: &Product,
    alice: &str,
) {
    let missing = UpdateProductRequest {
        id: "nope".into(),
        name: Some("X".into()),
        ..Default::default()
    };
    refused(
        c.update_product(authed(alice, missing)).await,
        Code::NotFound,
        "nope",
    );
    refused(
        c.get_product(authed(alice, GetProductRequest { id: "nope".into() }))
            .await,
        Code::NotFound,
        "nope",
    );
    refused(
        c.get_product(authed(alice, GetProductRequest { id: String::new() }))
            .await,
        Code::InvalidArgument,
        "id is required",
    );
    refused(
        c.get_product(GetProductRequest {
            id: widget.id.clone(),
        })
        .await,
        Code::Unauthenticated,
        "",
    );
}

async fn ownership(kind: Kind) {
    let test = TestDb::new(kind).await;
    let node = start_node(&test.db).await;
    let mut c = clients(&node).await.products;
    let (alice, bob) = (token("alice", ""), token("bob", ""));

    let widget = create(&mut c, "alice", " Blue Widget ", 1999).await;
    assert_eq!(
        (widget.owner_id.as_str(), widget.name.as_str()),
        ("alice", "Blue Widget")
    );
    assert!(!widget.archived);
    assert_eq!(widget.created_at, widget.updated_at);
    assert_eq!(widget.version, 1);

    let seen = c
        .get_product(authed(
            &bob,
            GetProductRequest {
                id: widget.id.clone(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(seen.into_inner(), widget);

    let steal = UpdateProductRequest {
        id: widget.id.clone(),
        price_cents: Some(1),
        ..Default::default()
    };
    refused(
        c.update_product(authed(&bob, steal)).await,
        Code::PermissionDenied,
        "owner",
    );
    let steal = DeleteProductRequest {
        id: widget.id.clone(),
        expected_version: Some(widget.version),
    };
    refused(
        c.delete_product(authed(&bob, steal)).await,
        Code::PermissionDenied,
        "owner",
    );

    partial_updates(&mut c, &widget, &alice, &bob).await;
    unknown_ids_and_anonymous_callers(&mut c, &widget, &alice).await;

    c.delete_product(authed(
        &alice,
        DeleteProductRequest {
            id: widget.id.clone(),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    refused(
        c.get_product(authed(
            &alice,
            GetProductRequest {
                id: widget.id.clone(),
            },
        ))
        .await,
        Code::NotFound,
        &widget.id,
    );
    refused(
        c.delete_product(authed(
            &alice,
            DeleteProductRequest {
                id: widget.id,
                ..Default::default()
            },
        ))
        .await,
        Code::NotFound,
        "no product",
    );

    node.shutdown().await.unwrap();
    test.finish().await;
}
both!(products_belong_to_their_creator, super::ownership);

/// `UpdateProduct` of `id` setting its price, expecting `expected`.
fn reprice(
    token: &str,
    id: &str,
    price_cents: i64,
    expected: Option<i64>,
) -> tonic::Request<UpdateProductRequest> {
    authed(
        token,
        UpdateProductRequest {
            id: id.to_owned(),
            price_cents: Some(price_cents),
            expected_version: expected,
            ..Default::default()
        },
    )
}

/// A change that names the version it was made from applies only at that
/// version: of two edits from one read, the second is refused, not lost.
async fn versions(kind: Kind) {
    let test = TestDb::new(kind).await;
    let node = start_node(&test.db).await;
    let mut c = clients(&node).await.products;
    let (alice, bob) = (token("alice", ""), token("bob", ""));
    let widget = create(&mut c, "alice", "Widget", 100).await;
    let get = |id: &str| authed(&alice, GetProductRequest { id: id.to_owned() });

    let first = c
        .update_product(reprice(&alice, &widget.id, 200, Some(1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((first.version, first.price_cents), (2, 200));
    refused(
        c.update_product(reprice(&alice, &widget.id, 300, Some(1)))
            .await,
        Code::FailedPrecondition,
        "is at version 2, not 1",
    );
    let now = c.get_product(get(&widget.id)).await.unwrap().into_inner();
    assert_eq!(now, first, "the refused edit changed nothing");

    // No expectation: applies at any version.
    let second = c
        .update_product(reprice(&alice, &widget.id, 400, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((second.version, second.price_cents), (3, 400));
    for bad in [0, -1, i64::MIN] {
        refused(
            c.update_product(reprice(&alice, &widget.id, 1, Some(bad)))
                .await,
            Code::InvalidArgument,
            "expected_version must be 1 or more",
        );
    }
    // Ownership is checked before the version.
    refused(
        c.update_product(reprice(&bob, &widget.id, 1, Some(1)))
            .await,
        Code::PermissionDenied,
        "owner",
    );
    refused(
        c.update_product(reprice(&alice, "nope", 1, Some(1))).await,
        Code::NotFound,
        "nope",
    );

    let delete = |expected| {
        authed(
            &alice,
            DeleteProductRequest {
                id: widget.id.clone(),
                expected_version: expected,
            },
        )
    };
    refused(
        c.delete_product(delete(Some(2))).await,
        Code::FailedPrecondition,
        "is at version 3, not 2",
    );
    assert_eq!(
        c.get_product(get(&widget.id)).await.unwrap().into_inner(),
        second
    );
    c.delete_product(delete(Some(3))).await.unwrap();
    refused(
        c.delete_product(delete(Some(3))).await,
        Code::NotFound,
        "no product",
    );

    node.shutdown().await.unwrap();
    test.finish().await;
}
both!(
    changes_apply_only_at_the_version_they_expect,
    super::versions
);

/// `CreateProduct` as the holder of `token`.
fn create_request(
    token: &str,
    name: &str,
    description: &str,
    price_cents: i64,
) -> tonic::Request<CreateProductRequest> {
    authed(
        token,
        CreateProductRequest {
            name: name.into(),
            description: description.into(),
            price_cents,
        },
    )
}

async fn validation(kind: Kind) {
    let test = TestDb::new(kind).await;
    let node = start_node(&test.db).await;
    let mut c = clients(&node).await.products;
    let alice = token("alice", "");
    let request = |name: &str, description: &str, price_cents: i64| {
        create_request(&alice, name, description, price_cents)
    };

    let long_name = "ß".repeat(201);
    for name in ["", "  ", long_name.as_str()] {
        refused(
            c.create_product(request(name, "", 1)).await,
            Code::InvalidArgument,
            "name must be 1 to 200 characters",
        );
    }
    let long_text = "x".repeat(2001);
    refused(
        c.create_product(request("N", &long_text, 1)).await,
        Code::InvalidArgument,
        "description must be at most 2000 characters",
    );
    for price in [-1, 10_000_000_001, i64::MIN] {
        refused(
            c.create_product(request("N", "", price)).await,
            Code::InvalidArgument,
            "price_cents must be 0 to 10000000000",
        );
    }
    let max = c
        .create_product(request(&"ß".repeat(200), &"x".repeat(2000), 10_000_000_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(max.price_cents, 10_000_000_000);

    let bad = UpdateProductRequest {
        id: max.id.clone(),
        price_cents: Some(-5),
        ..Default::default()
    };
    refused(
        c.update_product(authed(&alice, bad)).await,
        Code::InvalidArgument,
        "price_cents",
    );
    let bad = UpdateProductRequest {
        id: max.id.clone(),
        name: Some(String::new()),
        ..Default::default()
    };
    refused(
        c.update_product(authed(&alice, bad)).await,
        Code::InvalidArgument,
        "name must be",
    );
    let unchanged = c
        .get_product(authed(&alice, GetProductRequest { id: max.id.clone() }))
        .await
        .unwrap();
    assert_eq!(unchanged.into_inner(), max);

    let long_query = ListProductsRequest {
        query: "q".repeat(201),
        ..Default::default()
    };
    refused(
        c.list_products(authed(&alice, long_query)).await,
        Code::InvalidArgument,
        "query must be at most 200",
    );

    assert_eq!(test.count("products").await, 1);

    node.shutdown().await.unwrap();
    test.finish().await;
}
both!(products_refuse_invalid_fields, super::validation);

async fn control_characters(kind: Kind) {
    let test = TestDb::new(kind).await;
    let node = start_node(&test.db).await;
    let mut c = clients(&node).await.products;
    let alice = token("alice", "");
    let request = |name: &str, description: &str, price_cents: i64| {
        create_request(&alice, name, description, price_cents)
    };

    // A NUL, which PostgreSQL cannot store, is refused
    // as input, never a server error (SQLite would have taken it).
    refused(
        c.create_product(request("a\0b", "", 1)).await,
        Code::InvalidArgument,
        "name must not contain control characters",
    );
    // Invisible format characters: a name that looks empty, or like
    // another's, or reverses what follows it.
    for name in [
        "\u{200b}",
        "Tea\u{ad}pot",
        "Teapot \u{202e}gnirts",
        "Tea\u{e0020}pot",
    ] {
        refused(
            c.create_product(request(name, "", 1)).await,
            Code::InvalidArgument,
            "name must not contain invisible format characters",
        );
    }
    refused(
        c.create_product(request("N", "a\0b", 1)).await,
        Code::InvalidArgument,
        "description must not contain control characters",
    );
    let lines = c
        .create_product(request("Lines", "one\ntwo\r\n\tthree", 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lines.description, "one\ntwo\r\n\tthree");
    for (query, owner_id, message) in [
        ("\0", "", "query must not contain control characters"),
        ("", "\0", "owner_id must not contain control characters"),
    ] {
        let listed = ListProductsRequest {
            query: query.into(),
            owner_id: owner_id.into(),
            ..Default::default()
        };
        refused(
            c.list_products(authed(&alice, listed)).await,
            Code::InvalidArgument,
            message,
        );
    }
    // A forged page token whose id is a NUL.
    let forged = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        "2026-01-01T00:00:00.000000Z \0",
    );
    let listed = ListProductsRequest {
        page_token: forged,
        ..Default::default()
    };
    refused(
        c.list_products(authed(&alice, listed)).await,
        Code::InvalidArgument,
        "page_token is not valid",
    );
    refused(
        c.get_product(authed(&alice, GetProductRequest { id: "\0".into() }))
            .await,
        Code::InvalidArgument,
        "id must not contain control characters",
    );
    assert_eq!(test.count("products").await, 1);

    node.shutdown().await.unwrap();
    test.finish().await;
}
both!(
    products_refuse_control_characters,
    super::control_characters
);

async fn names(c: &mut ProductsClient<Channel>, request: ListProductsRequest) -> Vec<String> {
    let page = c
        .list_products(authed(&token("reader", ""), request))
        .await
        .unwrap()
        .into_inner();
    page.products
        .into_iter()
        .map(|product| product.name)
        .collect()
}

async fn search_and_pages(kind: Kind) {
    let test = TestDb::new(kind).await;
    let node = start_node(&test.db).await;
    let mut c = clients(&node).await.products;
    for name in [
        "Blue Widget",
        "red widget",
        "WIDGET XL",
        "Gadget",
        "100% cotton shirt",
        "cotton_candy",
        "Ärger Äpfel",
    ] {
        create(&mut c, "alice", name, 100).await;
    }
    create(&mut c, "bob", "Bob's widget", 5).await;
    let query = |query: &str, owner_id: &str| ListProductsRequest {
        query: query.into(),
        owner_id: owner_id.into(),
        ..Default::default()
    };

    let widgets = ["Blue Widget", "red widget", "WIDGET XL", "Bob's widget"];
    assert_eq!(names(&mut c, query("widget", "")).await, widgets);
    assert_eq!(names(&mut c, query("WIDGET", "")).await, widgets);
    assert_eq!(names(&mut c, query("%", "")).await, ["100% cotton shirt"]);
    assert_eq!(names(&mut c, query("_", "")).await, ["cotton_candy"]);
    assert_eq!(names(&mut c, query("n_c", "")).await, ["cotton_candy"]);
    assert_eq!(names(&mut c, query("äPFEL", "")).await, ["Ärger Äpfel"]);
    assert_eq!(
        names(&mut c, query("widget", "bob")).await,
        ["Bob's widget"]
    );
    assert_eq!(names(&mut c, query("", "alice")).await.len(), 7);
    assert!(names(&mut c, query("nothing like it", "")).await.is_empty());

    // Pages of 2 through the widgets, then of 3 through everything.
    let reader = token("reader", "");
    for (size, filter, expected) in [(2, "widget", 4), (3, "", 8)] {
        let (mut seen, mut page_token, mut pages) = (Vec::new(), String::new(), 0);
        loop {
            let request = ListProductsRequest {
                page_size: size,
                page_token,
                query: filter.into(),
                ..Default::default()
            };
            let page = c
                .list_products(authed(&reader, request))
                .await
                .unwrap()
                .into_inner();
            pages += 1;
            seen.extend(page.products.into_iter().map(|product| product.name));
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        assert_eq!(seen.len(), expected, "{seen:?}");
        assert_eq!(pages, expected.div_ceil(size as usize));
        if filter == "widget" {
            assert_eq!(seen, widgets);
        }
    }
    let forged = ListProductsRequest {
        page_token: "Zm9v".into(),
        ..Default::default()
    };
    refused(
        c.list_products(authed(&reader, forged)).await,
        Code::InvalidArgument,
        "page_token",
    );
    let big = ListProductsRequest {
        page_size: 101,
        ..Default::default()
    };
    refused(
        c.list_products(authed(&reader, big)).await,
        Code::InvalidArgument,
        "page_size",
    );

    node.shutdown().await.unwrap();
    test.finish().await;
}
both!(products_are_searched_and_paged, super::search_and_pages);
