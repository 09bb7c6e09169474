"""beanraft.replication"""
