"""CSV helpers shared by the example tasks."""

import csv
from decimal import Decimal, InvalidOperation

FIELDS = ["date", "product", "quantity", "amount"]


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_rows(f, rows, fields=FIELDS):
    writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def clean_row(row):
    """A normalized row, or None for a row that cannot be used."""
    try:
        quantity = int(row.get("quantity", "").strip())
        amount = Decimal(row.get("amount", "").strip()).quantize(Decimal("0.01"))
    except (ValueError, InvalidOperation):
        return None
    product = (row.get("product") or "").strip().lower()
    date = (row.get("date") or "").strip()
    if not product or not date or quantity <= 0:
        return None
    return {"date": date, "product": product, "quantity": str(quantity), "amount": str(amount)}
