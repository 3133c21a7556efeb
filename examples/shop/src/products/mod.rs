//! The products service, `products` 1.0.0 (`products.v1.Products`): the
//! catalog.
//!
//! - Every method needs an authenticated caller; a product belongs to the
//!   caller who created it (its token's subject) and only they may update or
//!   delete it (`PERMISSION_DENIED` otherwise).
//! - Each product has a version, 1 when created and one more with every
//!   change; an update or delete that names an `expected_version` applies
//!   only at that version (`FAILED_PRECONDITION` otherwise), so an edit
//!   made from a stale read does not silently undo the newer one. An update
//!   that sets no field is refused (`INVALID_ARGUMENT`) rather than make a
//!   new version of the same product.
//! - `ListProducts` pages in creation order and filters by owner and by a
//!   case-insensitive substring of the name (`%` and `_` match themselves).
//! - It consumes `users.deleted` through the durable consumer
//!   [`USERS_DELETED_CONSUMER`] and archives that user's products: they stay
//!   readable with `GetProduct` but leave listings unless `include_archived`.
//!   From then on the user's tokens, still valid until they expire, create
//!   no product and change or delete no archived one (`PERMISSION_DENIED`);
//!   a creation racing the archive waits for it or is archived by it (both
//!   write the owner's row first).

mod repo;

use room619::{ServiceBuilder, bus::Event, middleware::auth::Requirement, service::BuiltService};
use shop_proto::{
    products::v1::{
        CreateProductRequest, DeleteProductRequest, DeleteProductResponse, GetProductRequest,
        ListProductsRequest, ListProductsResponse, Product, UpdateProductRequest,
        products_server::{Products, ProductsServer},
    },
    users::v1::UserEvent,
};
use tonic::{Request, Response, Status};

use repo::{Changes, Filter, ProductRow, ProductStore};

use crate::{access::caller, store::Db};

/// The durable consumer that archives a deleted user's products.
pub const USERS_DELETED_CONSUMER: &str = "products-archive-deleted-users";

/// The products service over `db`.
///
/// # Errors
///
/// Only if the service definition is invalid (a bug).
pub fn service(db: Db) -> room619::Result<BuiltService> {
    let store = ProductStore::new(db);
    let health = store.db().clone();
    let archiver = store.clone();
    ServiceBuilder::new("products", "1.0.0")?
        .description("The product catalog (products.v1)")
        .grpc(ProductsServer::new(Api(store)))
        .file_descriptor_set(shop_proto::FILE_DESCRIPTOR_SET)
        .require(
            "/products.v1.Products/{*method}",
            Requirement::authenticated(),
        )
        .dependency("database", move || health.health())
        .durable_subscribe(
            crate::users::DELETED,
            USERS_DELETED_CONSUMER,
            move |_ctx, event: Event<UserEvent>| {
                let store = archiver.clone();
                async move { archive(&store, event.body()).await }
            },
        )
        .build()
}

/// Archives the products of the user `event` announces deleted.
async fn archive(store: &ProductStore, event: &UserEvent) -> room619::Result<()> {
    if event.user_id.is_empty() {
        tracing::warn!("a users.deleted event without a user id; nothing to archive");
        return Ok(());
    }
    let archived = store.archive_owned_by(&event.user_id).await?;
    tracing::info!(user = %event.user_id, archived, "archived the products of a deleted user");
    Ok(())
}

fn product(row: ProductRow) -> Product {
    Product {
        id: row.id,
        owner_id: row.owner_id,
        name: row.name,
        description: row.description,
        price_cents: row.price_cents,
        archived: row.archived,
        created_at: row.created_at,
        updated_at: row.updated_at,
        version: row.version,
    }
}

#[derive(Debug, Clone)]
struct Api(ProductStore);

#[tonic::async_trait]
impl Products for Api {
    async fn create_product(
        &self,
        request: Request<CreateProductRequest>,
    ) -> Result<Response<Product>, Status> {
        let caller = caller(request.extensions())?;
        let request = request.into_inner();
        let row = self
            .0
            .create(
                &caller,
                &request.name,
                &request.description,
                request.price_cents,
            )
            .await?;
        Ok(Response::new(product(row)))
    }

    async fn get_product(
        &self,
        request: Request<GetProductRequest>,
    ) -> Result<Response<Product>, Status> {
        caller(request.extensions())?;
        Ok(Response::new(product(
            self.0.get(&request.get_ref().id).await?,
        )))
    }

    async fn list_products(
        &self,
        request: Request<ListProductsRequest>,
    ) -> Result<Response<ListProductsResponse>, Status> {
        caller(request.extensions())?;
        let request = request.into_inner();
        let (rows, next_page_token) = self
            .0
            .list(&Filter {
                page_size: request.page_size,
                page_token: &request.page_token,
                query: &request.query,
                owner_id: &request.owner_id,
                include_archived: request.include_archived,
            })
            .await?;
        Ok(Response::new(ListProductsResponse {
            products: rows.into_iter().map(product).collect(),
            next_page_token,
        }))
    }

    async fn update_product(
        &self,
        request: Request<UpdateProductRequest>,
    ) -> Result<Response<Product>, Status> {
        let caller = caller(request.extensions())?;
        let request = request.into_inner();
        let changes = Changes {
            name: request.name,
            description: request.description,
            price_cents: request.price_cents,
            expected_version: request.expected_version,
        };
        let row = self.0.update(&caller, &request.id, changes).await?;
        Ok(Response::new(product(row)))
    }

    async fn delete_product(
        &self,
        request: Request<DeleteProductRequest>,
    ) -> Result<Response<DeleteProductResponse>, Status> {
        let caller = caller(request.extensions())?;
        let request = request.get_ref();
        self.0
            .delete(&caller, &request.id, request.expected_version)
            .await?;
        Ok(Response::new(DeleteProductResponse {}))
    }
}
