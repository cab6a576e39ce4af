"""The repository's product library: each user's product images by name.

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

    async def create_product(self, owner_id: int, name: str, image_key: str) -> Product:
        if await self.find_product(owner_id, name) is not None:
            raise DuplicateName(f"you already have a product named {name!r}")
        product = Product(owner_id=owner_id, name=name, name_key=name_key(name), image_key=image_key)
        try:
            async with self.db.session() as s:
                s.add(product)
                await s.flush()
        except IntegrityError:
            raise DuplicateName(f"you already have a product named {name!r}") from None
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
