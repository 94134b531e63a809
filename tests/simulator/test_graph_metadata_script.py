"""scripts/graph_metadata.py on a miniature of its two sources: a CSDL document (v1.0) and a wheel laid
out as Microsoft's generated beta SDK is. What it writes is what monitor/simulator/graph_metadata.py reads."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from monitor.simulator.graph_metadata import VersionMetadata
from scripts.graph_metadata import main

CSDL = """<?xml version="1.0" encoding="utf-8"?>
<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">
  <edmx:DataServices>
    <Schema Namespace="microsoft.graph" Alias="graph" xmlns="http://docs.oasis-open.org/odata/ns/edm">
      <EntityType Name="entity" Abstract="true"><Property Name="id" Type="Edm.String" /></EntityType>
      <EntityType Name="directoryObject" BaseType="graph.entity">
        <Property Name="deletedDateTime" Type="Edm.DateTimeOffset" />
      </EntityType>
      <EntityType Name="user" BaseType="graph.directoryObject">
        <Property Name="displayName" Type="Edm.String" />
        <Property Name="assignedPlans" Type="Collection(graph.assignedPlan)" />
        <NavigationProperty Name="manager" Type="graph.directoryObject" />
      </EntityType>
      <EntityType Name="group" BaseType="graph.directoryObject">
        <NavigationProperty Name="members" Type="Collection(graph.directoryObject)" />
        <NavigationProperty Name="calendar" Type="graph.calendar" />
      </EntityType>
      <EntityType Name="calendar" BaseType="graph.entity" />
      <ComplexType Name="assignedPlan"><Property Name="service" Type="Edm.String" /></ComplexType>
      <Function Name="delta" IsBound="true">
        <Parameter Name="bindingParameter" Type="Collection(graph.user)" />
        <ReturnType Type="Collection(graph.user)" />
      </Function>
      <EntityContainer Name="GraphService">
        <EntitySet Name="users" EntityType="microsoft.graph.user" />
        <EntitySet Name="groups" EntityType="microsoft.graph.group" />
      </EntityContainer>
    </Schema>
  </edmx:DataServices>
</edmx:Edmx>
"""


def _model(cls: str, base: str, fields: dict[str, str], imports: str = "", odata: str = "") -> str:
    lines = [f"from .{imports} import {imports.title().replace('_', '')}" if imports else ""]
    lines += [f"class {cls}({base}):", f'    odata_type: Optional[str] = "#{odata}"' if odata else "    pass"]
    lines += ["    def get_field_deserializers(self):", "        fields = {"]
    lines += [f"            \"{name}\": lambda n : setattr(self, 'x', n.{reader})," for name, reader in fields.items()]
    lines += ["        }"]
    return "\n".join(lines) + "\n"


SDK = {
    "models/entity.py": _model("Entity", "AdditionalDataHolder, BackedModel, Parsable", {"id": "get_str_value()"}),
    "models/user.py": "from .entity import Entity\nfrom .mobile_app import MobileApp\n"
    + _model(
        "User",
        "Entity, Parsable",
        {
            "id": "get_str_value()",
            "displayName": "get_str_value()",
            "isAssigned": "get_bool_value()",
            "apps": "get_collection_of_object_values(MobileApp)",
        },
        odata="microsoft.graph.user",
    ),
    "models/mobile_app.py": "from .entity import Entity\n"
    + _model("MobileApp", "Entity, Parsable", {"id": "get_str_value()", "publisher": "get_str_value()"}),
    "models/user_collection_response.py": "from .user import User\n"
    + _model(
        "UserCollectionResponse",
        "BaseCollectionPaginationCountResponse, Parsable",
        {"value": "get_collection_of_object_values(User)"},
    ),
    "users/users_request_builder.py": "from ..models.user_collection_response import UserCollectionResponse\n"
    'super().__init__(request_adapter, "{+baseurl}/users{?%24select,%24top}", path_parameters)\n'
    "    async def get(self,request_configuration = None) -> Optional[UserCollectionResponse]:\n",
    "users/delta/delta_request_builder.py": "from .delta_get_response import DeltaGetResponse\n"
    'super().__init__(request_adapter, "{+baseurl}/users/delta(){?%24select}", path_parameters)\n'
    "    async def get(self,request_configuration = None) -> Optional[DeltaGetResponse]:\n",
    "users/delta/delta_get_response.py": "from ...models.user import User\n"
    + _model(
        "DeltaGetResponse", "BaseDeltaFunctionResponse, Parsable", {"value": "get_collection_of_object_values(User)"}
    ),
    "users/item/assign/assign_request_builder.py": "super().__init__(request_adapter, "
    '"{+baseurl}/users/{user%2Did}/assign", x)\n'
    "    async def post(self,body, request_configuration = None) -> Optional[bytes]:\n",
    "users/item/assign/assign_post_request_body.py": _model(
        "AssignPostRequestBody", "AdditionalDataHolder, BackedModel, Parsable", {"appId": "get_str_value()"}
    ),
}


def test_the_script_writes_what_the_checks_read(tmp_path: Path) -> None:
    csdl = tmp_path / "v1.xml"
    csdl.write_text(CSDL)
    wheel = tmp_path / "msgraph_beta_sdk-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in SDK.items():
            archive.writestr(f"msgraph_beta/generated/{path}", text)
    out = tmp_path / "graph_metadata.json"
    main(["--v1", str(csdl), "--v1-source", "a test CSDL", "--beta-wheel", str(wheel), "--out", str(out)])
    artifact = json.loads(out.read_text())
    assert artifact["header"]["v1.0"].startswith("a test CSDL; sha256 ")
    assert "msgraph_beta_sdk-0.0.1" in artifact["header"]["beta"]

    v1 = VersionMetadata("v1.0", artifact["v1.0"])
    user = v1.type("microsoft.graph.user")
    assert set(user.properties) == {"id", "deletedDatetime".lower(), "displayname", "assignedplans"}
    assert user.properties["assignedplans"] == ("assignedPlans", "C:microsoft.graph.assignedPlan")
    assert v1.type("microsoft.graph.group").navigation["members"] == ("members", "C:microsoft.graph.directoryObject")
    assert v1.type("microsoft.graph.group").navigation["calendar"] == ("calendar", None)  # not followed: by name
    assert v1.operation("microsoft.graph.user", True, "delta()") is not None
    assert v1.derived["microsoft.graph.directoryObject"] == {"microsoft.graph.user", "microsoft.graph.group"}

    beta = VersionMetadata("beta", artifact["beta"])
    assert beta.roots["users"] == "C:microsoft.graph.user"
    beta_user = beta.type("microsoft.graph.user")
    assert {"isassigned", "displayname", "id"} <= set(beta_user.properties)
    assert beta_user.navigation["apps"] == ("apps", None)  # an entity type: navigation (not followed)
    delta = beta.operation("microsoft.graph.user", True, "delta")
    assert delta is not None and delta.returns == "C:microsoft.graph.user"
    assign = beta.operation("microsoft.graph.user", False, "assign")
    assert assign is not None and (assign.kind, assign.parameters, assign.returns) == (
        "action",
        ("appId",),
        "Edm.Stream",
    )
