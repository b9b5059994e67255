"""The public catalogue of standards: what a partner needs to choose one, readable without a token."""

from __future__ import annotations

from flask.views import MethodView
from marshmallow import validate
from sqlalchemy import or_, select

from services.inventory import domain, schemas
from services.inventory.api.standards import usable_condition
from services.inventory.models import Standard
from shared.timeutil import institute_today
from shared.web import Blueprint, db_session, paginate_query

blp = Blueprint(
    "catalogue", __name__, url_prefix="/api/v1",
    description="The institute's public measurement standards (社会公用计量标准) that are not retired, "
                "readable without a token.",
)


class CatalogueQuerySchema(schemas.Schema):
    discipline = schemas.fields.String(validate=validate.OneOf(domain.DISCIPLINES))
    usable = schemas.fields.Boolean(metadata={
        "description": "Only standards that are (true) or are not (false) usable today"})
    q = schemas.fields.String(validate=validate.Length(max=100), metadata={
        "description": "Search in code, names and measurand (case-insensitive substring)"})


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
        if "usable" in args:
            usable = usable_condition(institute_today())
            conditions.append(usable if args["usable"] else ~usable)
        if args.get("q"):
            q = args["q"]
            conditions.append(or_(Standard.code.icontains(q, autoescape=True),
                                  Standard.name.icontains(q, autoescape=True),
                                  Standard.name_en.icontains(q, autoescape=True),
                                  Standard.measurand.icontains(q, autoescape=True)))
        query = select(Standard).where(*conditions).order_by(Standard.code)
        return paginate_query(db_session(), query, pagination_parameters)
