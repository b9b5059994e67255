"""The public catalogue of standards: what a partner needs to choose one, readable without a token."""

from __future__ import annotations

from flask.views import MethodView
from marshmallow import validate
from sqlalchemy import func, or_, select

from services.inventory import domain, schemas
from services.inventory.models import Standard
from shared.web import Blueprint, db_session

blp = Blueprint(
    "catalogue", __name__, url_prefix="/api/v1",
    description="The institute's public measurement standards (社会公用计量标准) that are not retired, "
                "readable without a token.",
)


class CatalogueQuerySchema(schemas.Schema):
    discipline = schemas.fields.String(validate=validate.OneOf(domain.DISCIPLINES))
    usable = schemas.fields.Boolean(metadata={
        "description": "Only standards that are (true) or are not (false) usable today"})
    q = schemas.fields.String(
        validate=[validate.Length(max=100), validate.Regexp(r"\A[^\x00]*\Z", error="must not contain NUL")],
        metadata={"description": "Search in code, names and measurand (case-insensitive substring)"},
    )


@blp.route("/catalogue")
class Catalogue(MethodView):
    @blp.doc(security=[])
    @blp.arguments(CatalogueQuerySchema, location="query")
    @blp.response(200, schemas.CatalogueEntrySchema(many=True))
    @blp.paginate()
    def get(self, args, pagination_parameters):
        """The catalogue of public standards (no token needed)

        Public standards (`public: true`) that are not retired, ordered by code. `usable` is derived
        today from the status, the assessment certificate and the equipment's calibrations.
        """
        conditions = [Standard.public.is_(True), Standard.status != "retired"]
        if "discipline" in args:
            conditions.append(Standard.discipline == args["discipline"])
        if args.get("q"):
            q = args["q"]
            conditions.append(or_(Standard.code.icontains(q, autoescape=True),
                                  Standard.name.icontains(q, autoescape=True),
                                  Standard.name_en.icontains(q, autoescape=True),
                                  Standard.measurand.icontains(q, autoescape=True)))
        session = db_session()
        query = select(Standard).where(*conditions).order_by(Standard.code)
        page = pagination_parameters
        if "usable" in args:
            # Usability is the domain's rule over the equipment's due dates, evaluated in Python rather
            # than restated in SQL; the equipment comes in one extra query (selectin), whatever the count.
            matching = [standard for standard in session.scalars(query) if standard.usable == args["usable"]]
            page.item_count = len(matching)
            return matching[page.first_item:page.first_item + page.page_size]
        page.item_count = session.scalar(select(func.count()).select_from(Standard).where(*conditions))
        if page.first_item >= page.item_count:
            return []  # also keeps absurd page numbers away from the database's OFFSET
        return session.scalars(query.offset(page.first_item).limit(page.page_size)).all()
