"""beanraft.node"""
