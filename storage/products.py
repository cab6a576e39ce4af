"""The repository's product library: each workspace's product images by name (owner-keyed calls:
the owner's home workspace, storage.workspace_keys).

Names follow the persona name rule (storage.names.name_key: unique and looked up under their
NFKC case-folded key, on SQLite and PostgreSQL alike); a deleted
product frees its name. The image stays in the blob store: turns that used it still name it.
:class:`storage.repository.Store` includes these methods.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from storage.db import Database
from storage.models import Product, utcnow
from storage.names import name_key
from storage.rows import DuplicateName


class ProductRecords:
    db: Database

    async def workspace_of(self, owner_id: int, workspace_id: int | None) -> int:
        raise NotImplementedError  # storage.repository.Store

    async def create_product(
        self, owner_id: int, name: str, image_key: str, *, workspace_id: int | None = None
    ) -> Product:
        """A new product of the workspace (default: the owner's home), added by ``owner_id``."""
        workspace_id = await self.workspace_of(owner_id, workspace_id)
        product = Product(
            workspace_id=workspace_id, owner_id=owner_id, name=name, name_key=name_key(name), image_key=image_key
        )
        try:
            async with self.db.session() as s:
                s.add(product)
                await s.flush()
        except IntegrityError:
            raise DuplicateName(f"this workspace already has a product named {name!r}") from None
        return product

    async def find_product(self, owner_id: int, name: str) -> Product | None:
        async with self.db.session() as s:
            return await s.scalar(
                select(Product).where(
                    Product.owner_id == owner_id,
                    Product.name_key == name_key(name),
                    Product.deleted_at.is_(None),
                )
            )

    async def list_products(self, owner_id: int) -> list[Product]:
        async with self.db.session() as s:
            rows = await s.scalars(
                select(Product)
                .where(Product.owner_id == owner_id, Product.deleted_at.is_(None))
                .order_by(Product.created_at, Product.id)
            )
            return list(rows)

    async def delete_product(self, product_id: int) -> None:
        async with self.db.session() as s:
            await s.execute(update(Product).where(Product.id == product_id).values(deleted_at=utcnow()))
