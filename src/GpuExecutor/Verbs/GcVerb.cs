using GpuExecutor.Workflows;

namespace GpuExecutor.Verbs;

/// <summary>`gc`: removes what jobs whose runner died left behind, through <see cref="CollectGarbage"/>.</summary>
public static class GcVerb
{
    public static async Task RunAsync(VerbContext context, TextWriter stdout)
    {
        await new CollectGarbage(context.Config, context.Adapters.Containers).RunAsync(stdout, context.Stop);
    }
}
