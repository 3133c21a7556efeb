//! `/v1/products`: the catalog, forwarded to `products.v1.Products` with the
//! caller's token (only a product's owner may change or delete it).

use axum::{Extension, response::Response};
use room619::{ServiceContext, middleware::validation::Valid, rpc::client::RpcChannel};
use shop_proto::products::v1::{
    CreateProductRequest, DeleteProductRequest, GetProductRequest, ListProductsRequest,
    UpdateProductRequest, products_client::ProductsClient,
};

use super::{
    PRODUCTS, REQUIREMENT,
    dto::{CreateProductBody, ListProductsQuery, ProductBody, ProductPage, UpdateProductBody},
    error::ApiError,
    extract::{Bearer, Id, Params},
    reply,
};

fn client(ctx: &ServiceContext) -> Result<ProductsClient<RpcChannel>, ApiError> {
    ctx.client::<ProductsClient<RpcChannel>>(PRODUCTS, REQUIREMENT)
        .map_err(|err| ApiError::reaching(PRODUCTS, err))
}

fn failed(status: tonic::Status) -> ApiError {
    ApiError::from_status(PRODUCTS, status)
}

/// Products in creation order, a page at a time, optionally searched by
/// name or limited to one owner; archived products are left out.
#[utoipa::path(
    get,
    path = "/v1/products",
    tag = "products",
    operation_id = "listProducts",
    params(ListProductsQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of products", body = ProductPage))
)]
pub(crate) async fn list(
    Extension(ctx): Extension<ServiceContext>,
    bearer: Bearer,
    Params(query): Params<ListProductsQuery>,
) -> Result<Response, ApiError> {
    let page = client(&ctx)?
        .list_products(bearer.request(ListProductsRequest {
            page_size: query.page_size.unwrap_or_default(),
            page_token: query.page_token.unwrap_or_default(),
            query: query.q.unwrap_or_default(),
            owner_id: query.owner_id.unwrap_or_default(),
            include_archived: false,
        }))
        .await
        .map_err(failed)?
        .into_inner();
    Ok(reply::ok(&ProductPage {
        products: page.products.into_iter().map(ProductBody::from).collect(),
        next_page_token: reply::token(page.next_page_token),
    }))
}

/// Creates a product owned by the caller.
#[utoipa::path(
    post,
    path = "/v1/products",
    tag = "products",
    operation_id = "createProduct",
    request_body = CreateProductBody,
    security(("bearer" = [])),
    responses((status = 201, description = "The new product", body = ProductBody,
        headers(("Location" = String, description = "The new product's URL"))))
)]
pub(crate) async fn create(
    Extension(ctx): Extension<ServiceContext>,
    bearer: Bearer,
    Valid(body): Valid<CreateProductBody>,
) -> Result<Response, ApiError> {
    let product = client(&ctx)?
        .create_product(bearer.request(CreateProductRequest {
            name: body.name,
            description: body.description,
            price_cents: body.price_cents,
        }))
        .await
        .map_err(failed)?
        .into_inner();
    let location = format!("/v1/products/{}", product.id);
    Ok(reply::created(&location, &ProductBody::from(product)))
}

/// One product (archived ones too).
#[utoipa::path(
    get,
    path = "/v1/products/{id}",
    tag = "products",
    operation_id = "getProduct",
    params(("id" = String, Path, description = "The product's id", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    security(("bearer" = [])),
    responses((status = 200, description = "The product", body = ProductBody))
)]
pub(crate) async fn get(
    Extension(ctx): Extension<ServiceContext>,
    bearer: Bearer,
    Id(id): Id,
) -> Result<Response, ApiError> {
    let product = client(&ctx)?
        .get_product(bearer.request(GetProductRequest { id }))
        .await
        .map_err(failed)?
        .into_inner();
    Ok(reply::ok(&ProductBody::from(product)))
}

/// Changes the fields that are given; only the owner may.
#[utoipa::path(
    patch,
    path = "/v1/products/{id}",
    tag = "products",
    operation_id = "updateProduct",
    params(("id" = String, Path, description = "The product's id", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    request_body = UpdateProductBody,
    security(("bearer" = [])),
    responses((status = 200, description = "The changed product", body = ProductBody))
)]
pub(crate) async fn update(
    Extension(ctx): Extension<ServiceContext>,
    bearer: Bearer,
    Id(id): Id,
    Valid(body): Valid<UpdateProductBody>,
) -> Result<Response, ApiError> {
    let product = client(&ctx)?
        .update_product(bearer.request(UpdateProductRequest {
            id,
            name: body.name,
            description: body.description,
            price_cents: body.price_cents,
        }))
        .await
        .map_err(failed)?
        .into_inner();
    Ok(reply::ok(&ProductBody::from(product)))
}

/// Deletes a product; only the owner may.
#[utoipa::path(
    delete,
    path = "/v1/products/{id}",
    tag = "products",
    operation_id = "deleteProduct",
    params(("id" = String, Path, description = "The product's id", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    security(("bearer" = [])),
    responses((status = 204, description = "The product is deleted"))
)]
pub(crate) async fn delete(
    Extension(ctx): Extension<ServiceContext>,
    bearer: Bearer,
    Id(id): Id,
) -> Result<Response, ApiError> {
    client(&ctx)?
        .delete_product(bearer.request(DeleteProductRequest { id }))
        .await
        .map_err(failed)?;
    Ok(reply::no_content())
}
