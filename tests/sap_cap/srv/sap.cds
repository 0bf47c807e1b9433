// A local OData peer shaped like SAP S/4HANA's published APIs: entity and field names as in the
// SAP Business Accelerator Hub specs (shared/samples/sap/specs), a subset of the fields, the same keys,
// navigation names and OData V2 types (Edm.Decimal strings, Edm.DateTime /Date(ms)/, Edm.DateTimeOffset).
// Served as OData V4 by @sap/cds and as OData V2 under /sap/opu/odata/sap/<service> by the v2 adapter.
namespace ironbus.sap;

// Every header is versioned by LastChangeDateTime: it is the ETag (If-Match) and the poll watermark.
aspect Changed {
  @cds.on.insert: $now  @cds.on.update: $now  @odata.etag
  LastChangeDateTime : Timestamp;
}

@path: 'API_SALES_ORDER_SRV'
service API_SALES_ORDER_SRV {
  @cds.query.limit: {default: 100, max: 100}
  entity A_SalesOrder : Changed {
    key SalesOrder                 : String(10);
        SalesOrderType             : String(4);
        SalesOrganization          : String(4);
        DistributionChannel        : String(2);
        OrganizationDivision       : String(2);
        SoldToParty                : String(10);
        PurchaseOrderByCustomer    : String(35);
        SalesOrderDate             : Date;
        RequestedDeliveryDate      : Date;
        CreationDate               : Date;
        LastChangeDate             : Date;
        TransactionCurrency        : String(5);
        TotalNetAmount             : Decimal(16, 3);
        OverallSDProcessStatus     : String(1);
        OverallSDDocumentRejectionSts : String(1);
        to_Item                    : Composition of many A_SalesOrderItem on to_Item.SalesOrder = SalesOrder;
  }
  entity A_SalesOrderItem {
    key SalesOrder               : String(10);
    key SalesOrderItem           : String(6);
        SalesOrderItemText       : String(40);
        Material                 : String(40);
        RequestedQuantity        : Decimal(15, 3);
        RequestedQuantityUnit    : String(3);
        RequestedQuantityISOUnit : String(3);
        NetAmount                : Decimal(16, 3);
        TransactionCurrency      : String(5);
  }
}

@path: 'API_PURCHASEORDER_PROCESS_SRV'
service API_PURCHASEORDER_PROCESS_SRV {
  entity A_PurchaseOrder : Changed {
    key PurchaseOrder          : String(10);
        PurchaseOrderType      : String(4);
        CompanyCode            : String(4);
        PurchasingOrganization : String(4);
        PurchasingGroup        : String(3);
        Supplier               : String(10);
        PurchaseOrderDate      : Date;
        CreationDate           : Date;
        DocumentCurrency       : String(5);
        PurchasingProcessingStatus : String(2);
        CorrespncExternalReference : String(12);
        CorrespncInternalReference : String(12);
        to_PurchaseOrderItem   : Composition of many A_PurchaseOrderItem on to_PurchaseOrderItem.PurchaseOrder = PurchaseOrder;
  }
  entity A_PurchaseOrderItem {
    key PurchaseOrder             : String(10);
    key PurchaseOrderItem         : String(5);
        PurchaseOrderItemText     : String(40);
        Material                  : String(40);
        Plant                     : String(4);
        OrderQuantity             : Decimal(13, 3);
        PurchaseOrderQuantityUnit : String(3);
        NetPriceAmount            : Decimal(16, 3);
        DocumentCurrency          : String(5);
        PurchaseRequisition       : String(10);
        PurchaseRequisitionItem   : String(5);
        PurchasingDocumentDeletionCode : String(1);
        to_ScheduleLine           : Composition of many A_PurchaseOrderScheduleLine
                                      on  to_ScheduleLine.PurchasingDocument     = PurchaseOrder
                                      and to_ScheduleLine.PurchasingDocumentItem = PurchaseOrderItem;
  }
  entity A_PurchaseOrderScheduleLine {
    key PurchasingDocument        : String(10);
    key PurchasingDocumentItem    : String(5);
    key ScheduleLine              : String(4);
        ScheduleLineDeliveryDate  : Date;
        ScheduleLineOrderQuantity : Decimal(13, 3);
        PurchaseOrderQuantityUnit : String(3);
  }
}

@path: 'API_PURCHASEREQ_PROCESS_SRV'
service API_PURCHASEREQ_PROCESS_SRV {
  entity A_PurchaseRequisitionHeader : Changed {
    key PurchaseRequisition     : String(10);
        PurchaseRequisitionType : String(4);
        PurReqnDescription      : String(40);
        to_PurchaseReqnItem     : Composition of many A_PurchaseRequisitionItem on to_PurchaseReqnItem.PurchaseRequisition = PurchaseRequisition;
  }
  entity A_PurchaseRequisitionItem {
    key PurchaseRequisition       : String(10);
    key PurchaseRequisitionItem   : String(5);
        PurchaseRequisitionItemText : String(40);
        Material                  : String(40);
        Plant                     : String(4);
        RequestedQuantity         : Decimal(13, 3);
        BaseUnit                  : String(3);
        DeliveryDate              : Date;
        FixedSupplier             : String(10);
        PurchasingOrganization    : String(4);
        PurchasingGroup           : String(3);
  }
}

@path: 'API_PRODUCT_SRV'
service API_PRODUCT_SRV {
  // two rows a page: reads of products go through __next / $skiptoken
  @cds.query.limit: {default: 2, max: 2}
  entity A_Product : Changed {
    key Product          : String(40);
        ProductType      : String(4);
        BaseUnit         : String(3);
        ProductGroup     : String(9);
        ProductOldID     : String(40);
        to_Description   : Composition of many A_ProductDescription on to_Description.Product = Product;
  }
  entity A_ProductDescription {
    key Product            : String(40);
    key Language           : String(2);
        ProductDescription : String(40);
  }
}

@path: 'API_BUSINESS_PARTNER'
service API_BUSINESS_PARTNER {
  entity A_BusinessPartner : Changed {
    key BusinessPartner         : String(10);
        BusinessPartnerFullName : String(81);
        BusinessPartnerCategory : String(1);
        SearchTerm1             : String(20);
        Customer                : String(10);
        Supplier                : String(10);
  }
  entity A_Customer {
    key Customer     : String(10);
        CustomerName : String(80);
  }
  entity A_Supplier {
    key Supplier     : String(10);
        SupplierName : String(80);
  }
}
