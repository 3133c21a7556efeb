"""A Python gRPC client of the shop, generated at run time from its .proto
files with grpcio-tools: it calls users (v1 and v2) and products directly,
with the caller's JWT in the metadata, and prints what it got as JSON.

Usage: grpc_client.py PROTO_ROOT HOST:PORT TOKEN USER_ID
"""

import json
import os
import sys
import tempfile

import grpc
import grpc_tools
from grpc_tools import protoc

PROTOS = ["users/v1/users.proto", "users/v2/users.proto", "products/v1/products.proto"]


def generate(proto_root):
    out = tempfile.mkdtemp(prefix="shop-grpc-")
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    status = protoc.main(
        ["protoc", f"-I{proto_root}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}"]
        + PROTOS
    )
    if status != 0:
        sys.exit(f"protoc failed with {status}")
    sys.path.insert(0, out)


def code_of(call):
    try:
        call()
    except grpc.RpcError as err:
        return err.code().name
    return "OK"


def main():
    proto_root, addr, token, user_id = sys.argv[1:5]
    generate(proto_root)
    from products.v1 import products_pb2, products_pb2_grpc
    from users.v1 import users_pb2, users_pb2_grpc
    from users.v2 import users_pb2 as users_v2_pb2, users_pb2_grpc as users_v2_pb2_grpc

    metadata = [("authorization", f"Bearer {token}")]
    with grpc.insecure_channel(addr) as channel:
        users = users_pb2_grpc.UsersStub(channel)
        users_v2 = users_v2_pb2_grpc.UsersStub(channel)
        products = products_pb2_grpc.ProductsStub(channel)
        user = users.GetUser(users_pb2.GetUserRequest(id=user_id), metadata=metadata, timeout=10)
        user_v2 = users_v2.GetUser(users_v2_pb2.GetUserRequest(id=user_id), metadata=metadata, timeout=10)
        page = products.ListProducts(
            products_pb2.ListProductsRequest(page_size=100, owner_id=user_id), metadata=metadata, timeout=10
        )
        missing = code_of(
            lambda: products.GetProduct(products_pb2.GetProductRequest(id="no-such-product"), metadata=metadata, timeout=10)
        )
        anonymous = code_of(lambda: users.GetUser(users_pb2.GetUserRequest(id=user_id), timeout=10))
        invalid = code_of(
            lambda: products.CreateProduct(
                products_pb2.CreateProductRequest(name="", price_cents=1), metadata=metadata, timeout=10
            )
        )
    print(
        json.dumps(
            {
                "user": {"id": user.id, "email": user.email, "name": user.name},
                "user_v2": {"id": user_v2.id, "display_name": user_v2.display_name},
                "products": [
                    {"id": p.id, "name": p.name, "price_cents": p.price_cents, "owner_id": p.owner_id}
                    for p in page.products
                ],
                "codes": {"missing": missing, "anonymous": anonymous, "invalid": invalid},
            }
        )
    )


if __name__ == "__main__":
    main()
