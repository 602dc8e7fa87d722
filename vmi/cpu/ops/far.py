"""(filled in by the family's owner)"""
