//! `/v1/products`: the catalog, forwarded to `products.v1.Products` with the
//! caller's token (only a product's owner may change or delete it). A
//! product's version is its `ETag`; see [`conditional`](super::conditional).

use axum::{
    Extension,
    response::{IntoResponse as _, Response},
};
use http::{StatusCode, header::ETAG};
use room619::{ServiceContext, middleware::validation::Valid, rpc::client::RpcChannel};
use shop_proto::products::v1::{
    CreateProductRequest, DeleteProductRequest, GetProductRequest, ListProductsRequest,
    UpdateProductRequest, products_client::ProductsClient,
};

use super::{
    PRODUCTS, REQUIREMENT,
    conditional::{IfMatch, IfNoneMatch, etag},
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

/// `response` with the `ETag` of a product at `version`.
fn tagged(mut response: Response, version: i64) -> Response {
    response.headers_mut().insert(ETAG, etag(version));
    response
}

/// What a change of a product asks the service to expect, from `If-Match`
/// and `If-None-Match`.
struct Expected {
    /// The version to send as `expected_version`.
    version: Option<i64>,
    /// The condition that is false at the product's version, when one is:
    /// the change is sent expecting a version no product reaches, so that
    /// the service still refuses it for what comes first (not the owner, the
    /// product archived), and its `FAILED_PRECONDITION` is told in these
    /// terms.
    unmet: Option<Unmet>,
}

/// A condition of a change that is false at the product's current version.
#[derive(Debug, Clone, Copy)]
enum Unmet {
    /// `If-Match` names no version the product is at (this one).
    Unlisted(i64),
    /// `If-None-Match` names the version the product is at (this one), or
    /// is `*`.
    Listed(i64),
}

impl Expected {
    /// The answer to the service's refusal `status` of a change of `id`.
    fn refused(&self, id: &str, status: tonic::Status) -> ApiError {
        let unmet = self
            .unmet
            .filter(|_| status.code() == tonic::Code::FailedPrecondition);
        let detail = match unmet {
            Some(Unmet::Unlisted(current)) => format!(
                "product {id} is at version {current} (`ETag: \"{current}\"`), which \
                 `If-Match` does not name: read it again before you change it"
            ),
            Some(Unmet::Listed(current)) => format!(
                "product {id} is at version {current} (`ETag: \"{current}\"`), which \
                 `If-None-Match` names (or it is `*`): it is left as it is"
            ),
            None => return failed(status),
        };
        room619::Error::failed_precondition(detail).into()
    }
}

/// What a change must find product `id` at, from `If-Match` and
/// `If-None-Match`: no version without either; the version `If-Match`
/// names when it names one and there is no `If-None-Match`; otherwise the
/// product's current version (`404` if there is no product), read first,
/// when both conditions hold at it, so that they still hold when the change
/// applies.
async fn expected_version(
    client: &mut ProductsClient<RpcChannel>,
    bearer: &Bearer,
    id: &str,
    condition: IfMatch,
    unless: &IfNoneMatch,
) -> Result<Expected, ApiError> {
    let exactly = |version: Option<i64>| Expected {
        version,
        unmet: None,
    };
    let listed = match condition {
        IfMatch::Any if unless.is_absent() => return Ok(exactly(None)),
        IfMatch::Versions(versions) if versions.len() == 1 && unless.is_absent() => {
            return Ok(exactly(versions.first().copied()));
        }
        IfMatch::Any => None,
        IfMatch::Versions(versions) => Some(versions),
        IfMatch::Never => Some(Vec::new()),
    };
    let current = client
        .get_product(bearer.request(GetProductRequest { id: id.to_owned() }))
        .await
        .map_err(failed)?
        .into_inner()
        .version;
    // RFC 9110 §13.2.2: `If-Match` first, then `If-None-Match`.
    let unmet = if listed.is_some_and(|listed| !listed.contains(&current)) {
        Some(Unmet::Unlisted(current))
    } else if unless.matches(current) {
        Some(Unmet::Listed(current))
    } else {
        None
    };
    Ok(Expected {
        version: Some(if unmet.is_some() { i64::MAX } else { current }),
        unmet,
    })
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
        headers(
            ("Location" = String, description = "The new product's URL"),
            ("ETag" = String, description = "Its version as an entity tag, `\"1\"`")
        )))
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
    let version = product.version;
    Ok(tagged(
        reply::created(&location, &ProductBody::from(product)),
        version,
    ))
}

/// One product (archived ones too).
#[utoipa::path(
    get,
    path = "/v1/products/{id}",
    tag = "products",
    operation_id = "getProduct",
    params(
        ("id" = String, Path, description = "The product's id", pattern = "^[A-Za-z0-9_-]{1,64}$"),
        ("If-None-Match" = Option<String>, Header, nullable = false, pattern = r##"^(\*|(W/)?"[!#-~]*"( ?, ?(W/)?"[!#-~]*")*)?$"##,
            description = "`304` instead of the product when it is at a version listed (its \
                           `ETag`, weak or strong) or the value is `*`")
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The product", body = ProductBody,
            headers(("ETag" = String, description = "Its version as an entity tag, such as `\"3\"`"))),
        (status = 304, description = "Not modified: the product is at a version `If-None-Match` names",
            headers(("ETag" = String, description = "Its version as an entity tag")))
    )
)]
pub(crate) async fn get(
    Extension(ctx): Extension<ServiceContext>,
    bearer: Bearer,
    Id(id): Id,
    unless: IfNoneMatch,
) -> Result<Response, ApiError> {
    let product = client(&ctx)?
        .get_product(bearer.request(GetProductRequest { id }))
        .await
        .map_err(failed)?
        .into_inner();
    let version = product.version;
    if unless.matches(version) {
        return Ok(tagged(StatusCode::NOT_MODIFIED.into_response(), version));
    }
    Ok(tagged(reply::ok(&ProductBody::from(product)), version))
}

/// Changes the fields that are given (one at least); only the owner may.
#[utoipa::path(
    patch,
    path = "/v1/products/{id}",
    tag = "products",
    operation_id = "updateProduct",
    params(
        ("id" = String, Path, description = "The product's id", pattern = "^[A-Za-z0-9_-]{1,64}$"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r##"^(\*|(W/)?"[!#-~]*"( ?, ?(W/)?"[!#-~]*")*)?$"##,
            description = "Change it only while it is at a version listed (its `ETag`): `412` \
                           otherwise"),
        ("If-None-Match" = Option<String>, Header, nullable = false, pattern = r##"^(\*|(W/)?"[!#-~]*"( ?, ?(W/)?"[!#-~]*")*)?$"##,
            description = "Change it only while it is at no version listed (its `ETag`, weak or \
                           strong; `*`: never): `412` otherwise")
    ),
    request_body = UpdateProductBody,
    security(("bearer" = [])),
    responses((status = 200, description = "The changed product", body = ProductBody,
        headers(("ETag" = String, description = "Its new version as an entity tag"))))
)]
pub(crate) async fn update(
    Extension(ctx): Extension<ServiceContext>,
    bearer: Bearer,
    Id(id): Id,
    condition: IfMatch,
    unless: IfNoneMatch,
    Valid(body): Valid<UpdateProductBody>,
) -> Result<Response, ApiError> {
    let mut client = client(&ctx)?;
    let expected = expected_version(&mut client, &bearer, &id, condition, &unless).await?;
    let product = client
        .update_product(bearer.request(UpdateProductRequest {
            id: id.clone(),
            name: body.name,
            description: body.description,
            price_cents: body.price_cents,
            expected_version: expected.version,
        }))
        .await
        .map_err(|status| expected.refused(&id, status))?
        .into_inner();
    let version = product.version;
    Ok(tagged(reply::ok(&ProductBody::from(product)), version))
}

/// Deletes a product; only the owner may.
#[utoipa::path(
    delete,
    path = "/v1/products/{id}",
    tag = "products",
    operation_id = "deleteProduct",
    params(
        ("id" = String, Path, description = "The product's id", pattern = "^[A-Za-z0-9_-]{1,64}$"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r##"^(\*|(W/)?"[!#-~]*"( ?, ?(W/)?"[!#-~]*")*)?$"##,
            description = "Delete it only while it is at a version listed (its `ETag`): `412` \
                           otherwise"),
        ("If-None-Match" = Option<String>, Header, nullable = false, pattern = r##"^(\*|(W/)?"[!#-~]*"( ?, ?(W/)?"[!#-~]*")*)?$"##,
            description = "Delete it only while it is at no version listed (its `ETag`, weak or \
                           strong; `*`: never): `412` otherwise")
    ),
    security(("bearer" = [])),
    responses((status = 204, description = "The product is deleted"))
)]
pub(crate) async fn delete(
    Extension(ctx): Extension<ServiceContext>,
    bearer: Bearer,
    Id(id): Id,
    condition: IfMatch,
    unless: IfNoneMatch,
) -> Result<Response, ApiError> {
    let mut client = client(&ctx)?;
    let expected = expected_version(&mut client, &bearer, &id, condition, &unless).await?;
    client
        .delete_product(bearer.request(DeleteProductRequest {
            id: id.clone(),
            expected_version: expected.version,
        }))
        .await
        .map_err(|status| expected.refused(&id, status))?;
    Ok(reply::no_content())
}
