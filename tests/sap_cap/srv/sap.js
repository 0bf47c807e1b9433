// Document numbers: SAP assigns them when a create sends none (internal number ranges); so does this peer.
// A counter per entity, not max()+1, so the creates of one $batch change set (run together) never collide.
const cds = require("@sap/cds");

const NUMBERS = {
  A_SalesOrder: ["SalesOrder", 5000000], A_PurchaseOrder: ["PurchaseOrder", 4500000000],
  A_PurchaseRequisitionHeader: ["PurchaseRequisition", 10000000],
};
const next = {};

module.exports = cds.service.impl(function () {
  for (const entity of Object.values(this.entities)) {
    const name = entity.name.split(".").pop();
    if (!NUMBERS[name]) continue;
    const [key, start] = NUMBERS[name];
    this.before("CREATE", entity, (req) => {
      if (req.data[key]) return;
      next[name] = (next[name] || start) + 1;
      req.data[key] = String(next[name] - 1);
    });
  }
});
