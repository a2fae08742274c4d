namespace GpuExecutor.Continuation;

/// <summary>The two calls of GitLab's jobs API that continuation needs. <see cref="GitLabClient"/> is the one implementation.</summary>
public interface IGitLabJobs : IDisposable
{
    /// <summary>GET /projects/:id/jobs/:job_id.</summary>
    Task<GitLabJob> GetJobAsync(long projectId, long jobId, CancellationToken cancellationToken);

    /// <summary>POST /projects/:id/jobs/:job_id/retry; returns the new job.</summary>
    Task<GitLabJob> RetryJobAsync(long projectId, long jobId, CancellationToken cancellationToken);

    /// <summary>GET /user: the token's user name; for `doctor`, which checks the token is accepted.</summary>
    Task<string> CurrentUserAsync(CancellationToken cancellationToken);
}
