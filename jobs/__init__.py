"""beanraft.jobs"""
