using GpuExecutor.Protocol;
using GpuExecutor.Workflows;

namespace GpuExecutor.Verbs;

/// <summary>`cleanup`: removes what the job left, through <see cref="CleanupJob"/>.</summary>
public static class CleanupVerb
{
    public static async Task RunAsync(VerbContext context)
    {
        var payload = JobPayloadReader.Read(context.Environment);
        context.Facts.Payload = payload;
        var job = JobIdentity.From(payload);
        await new CleanupJob(context.Config, context.Adapters.Containers, context.Log).RunAsync(job);
    }
}
