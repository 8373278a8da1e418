"""What the runservice and the executor share: the documents (``model``), their JSON form
(``codec``), the errors, and the HTTP plumbing (``http``). Nothing here touches a store."""
