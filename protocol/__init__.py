"""beanraft.protocol"""
